// The reaper: what an incumbent that is PID 1 of its PID namespace becomes after it hands
// off (`docker run image kvd`, a pod without a shared PID namespace). When a namespace's
// init exits, the kernel kills every process in it, the successor included; so PID 1
// never exits while a successor serves. It re-executes its own binary (/proc/self/exe,
// the file it runs, whatever the path names now) as a minimal init: all of the server's
// memory is gone with the exec, every fd closed, and it only
//   - reaps every child and orphan (init's duty in the namespace);
//   - forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 (what `docker stop`,
//     `docker kill -s USR2` and the like send to PID 1) to the serving process: the pid
//     in the server's pidfile when it has one, otherwise every process of the namespace;
//   - exits when the namespace has no other process left, with the status of the last.
#pragma once

#include <string>
#include <vector>

namespace baton {

/// Re-executes this process as the reaper. Returns only if the exec failed, with why.
std::string exec_reaper(const std::vector<std::string>& argv, const std::string& pidfile);

/// Becomes the reaper without an exec (when exec_reaper failed): the memory stays.
[[noreturn]] void reap_in_place(const std::string& pidfile);

/// Runs the reaper if this process was exec'ed as one (BATON_REAPER in the environment);
/// otherwise returns at once. Called first thing by Runtime::create.
void run_reaper_if_asked();

}  // namespace baton
