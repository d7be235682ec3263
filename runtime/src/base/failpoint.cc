// Fail point parsing and actions.
#include "base/failpoint.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace baton {

Result<FailPoints> FailPoints::parse(std::string_view spec) {
  FailPoints fp;
  while (!spec.empty()) {
    size_t comma = spec.find(',');
    std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    std::string_view name = item.substr(0, eq);
    std::string_view action = eq == std::string_view::npos ? "" : item.substr(eq + 1);
    Action a;
    if (action == "crash") {
      a = Action::kCrash;
    } else if (action == "hang") {
      a = Action::kHang;
    } else if (action == "error") {
      a = Action::kError;
    } else if (action == "delay") {
      a = Action::kDelay;
    } else {
      return Error(ErrorKind::kInvalidArgument,
                   "BATON_FAILPOINTS: '" + std::string(item) +
                       "' must be name=crash, name=hang, name=error or name=delay");
    }
    fp.armed_[std::string(name)] = a;
  }
  return fp;
}

FailPoints::Action FailPoints::at(std::string_view name) const {
  auto it = armed_.find(name);
  return it == armed_.end() ? Action::kNone : it->second;
}

Result<void> FailPoints::hit(std::string_view name) const {
  switch (at(name)) {
    case Action::kNone:
      return ok();
    case Action::kCrash:
      std::fprintf(stderr, "baton[%d]: fail point %.*s: crash\n", static_cast<int>(::getpid()),
                   static_cast<int>(name.size()), name.data());
      ::raise(SIGKILL);
      for (;;) ::pause();
    case Action::kHang:
      std::fprintf(stderr, "baton[%d]: fail point %.*s: hang\n", static_cast<int>(::getpid()),
                   static_cast<int>(name.size()), name.data());
      for (;;) ::pause();
    case Action::kError:
      return Error(ErrorKind::kAborted, "fail point " + std::string(name));
    case Action::kDelay: {
      std::fprintf(stderr, "baton[%d]: fail point %.*s: delay 500 ms\n",
                   static_cast<int>(::getpid()), static_cast<int>(name.size()), name.data());
      timespec d{0, 500'000'000};
      while (::nanosleep(&d, &d) != 0 && errno == EINTR) {
      }
      return ok();
    }
  }
  return ok();
}

}  // namespace baton
