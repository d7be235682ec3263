# The control channel between an incumbent and its successor: one Message per
# SOCK_SEQPACKET packet, fds attached with SCM_RIGHTS where a message says so.
# docs/protocol.md describes the phases. Changing this schema bumps kProtocolVersion
# (runtime/src/handoff/messages.h) in the same commit as docs/protocol.md.
@0xb5c6d5ea3d7d80e4;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::wire");

struct SectionRange {
  name @0 :Text;
  minVersion @1 :UInt32;   # oldest schema version this build can restore
  maxVersion @2 :UInt32;   # newest
  typeId @3 :UInt64;       # a typed section's root struct (its Cap'n Proto id); 0: untyped
}

struct SectionSchema {     # a typed section of the incumbent, in WELCOME
  name @0 :Text;
  version @1 :UInt32;      # the incumbent's schema version of it
  typeId @2 :UInt64;
  schema @3 :Data;         # a serialization/schema.capnp TypedSchema message
}

struct Hello {             # successor -> incumbent, first message
  protocolVersion @0 :UInt32;     # the oldest version it speaks (version 4 checks it for equality)
  pid @1 :Int32;
  capabilities @2 :List(Text);
  sections @3 :List(SectionRange);
  maxProtocolVersion @4 :UInt32;  # the newest it speaks; 0 (absent) from version 4
  workers @5 :UInt32;             # worker threads besides the main one (RuntimeOptions)
}

struct Welcome {           # incumbent -> successor: HELLO accepted
  protocolVersion @0 :UInt32;     # the version chosen for this upgrade
  generation @1 :UInt64;
  capabilities @2 :List(Text);
  schemas @3 :List(SectionSchema);  # every typed section; the successor checks them
}

struct CheckpointReady {   # incumbent -> successor, with the segment fd attached
  startLsn @0 :UInt64;
  bytes @1 :UInt64;
  workerSegments @2 :UInt32;  # one more segment fd per worker thread, attached in order
}

struct Restored {          # successor -> incumbent: checkpoint restored, replaying deltas
  records @0 :UInt64;
  restoreUs @1 :Int64;
}

struct Frozen {            # incumbent -> successor: no more deltas after finalLsn
  finalLsn @0 :UInt64;
  fdCount @1 :UInt32;      # fds that follow in FdBatch messages
  freezeStartUs @2 :Int64; # CLOCK_MONOTONIC, shared by both processes
  metrics @3 :List(MetricSample);  # the sender's counters, for the receiver to continue
  workerFreezeUs @4 :List(Int64);  # when each worker thread froze (CLOCK_MONOTONIC)
}

struct MetricSample {      # one series of a counter or histogram: name{labels} and value
  series @0 :Text;
  value @1 :Float64;
}

struct HandedFd {
  tag @0 :Text;            # the server's own label: "listener", "conn", ...
  state @1 :Data;          # opaque per-connection bytes, e.g. a half-read request
  id @2 :UInt64;           # the socket's identity (its inode) while it is open
  early @3 :Bool;          # in FdBatch: names a socket sent in EarlyFds (by id); no fd attached
  stateFd @4 :Bool;        # in FdBatch (protocol 6): state is empty; it travels in a sealed
                           # memfd attached right after the socket's fd
  worker @5 :UInt16;       # the worker thread that served it (0: the main thread)
}

struct FdBatch {           # incumbent -> successor after FROZEN; fds of entries that are
  fds @0 :List(HandedFd);  # not `early` attached in order
}

struct EarlyFds {          # incumbent -> successor in catch-up, before FROZEN: sockets handed
  fds @0 :List(HandedFd);  # over ahead of the freeze (no state yet), fds attached in order
}

struct ProbeTally {        # version 7: shadow probes the receiving side evaluated
  evaluated @0 :UInt64;
  mismatched @1 :UInt64;
  discrepancies @2 :List(Text);  # the first few, shortened
}

struct Prepared {          # successor -> incumbent: state exact, every fd held
  appliedLsn @0 :UInt64;
  fdsReceived @1 :UInt32;
  probes @2 :ProbeTally;   # version 7: every probe up to the final LSN
}

struct Timings {           # the incumbent's side of the timeline, all microseconds
  startUs @0 :Int64;       # CLOCK_MONOTONIC at the upgrade request
  spawnUs @1 :Int64;
  checkpointUs @2 :Int64;
  catchupUs @3 :Int64;
  freezeStartUs @4 :Int64;
  checkpointBytes @5 :UInt64;
  deltas @6 :UInt64;
  fds @7 :UInt64;
  probesSent @8 :UInt64;   # version 7: shadow probes mirrored into the stream
}

struct Commit {            # incumbent -> successor: the fds are yours
  generation @0 :UInt64;
  timings @1 :Timings;
  probationMs @2 :UInt32;  # version 5: the sender stands by this long (0: it exits)
  digestK0 @3 :UInt64;     # version 7: the key of the state digest at the cut (0, 0: none)
  digestK1 @4 :UInt64;
}

struct Progress {          # successor -> incumbent, at most every millisecond in catch-up,
  appliedLsn @0 :UInt64;   # and at once after EarlyFds
  earlyFds @1 :UInt32;     # early sockets received (and prepared by the server) so far
  probes @2 :ProbeTally;   # version 7
}

struct SectionDigest {     # version 7: one section's state digest at the cut
  name @0 :Text;
  version @1 :UInt32;      # the schema version its entries were hashed as
  sum @2 :UInt64;
  entries @3 :UInt64;
}

struct Shadow {            # version 7, standby -> successor during probation
  probes @0 :ProbeTally;   # reverse probes evaluated by the standby
  verdict @1 :Text;        # non-empty: roll back, and why
  digestDone @2 :Bool;
  digests @3 :List(SectionDigest);
}


struct SectionVersion {
  name @0 :Text;
  version @1 :UInt32;
}

struct Serving {           # successor -> incumbent: COMMIT received; serving from now on
  pid @0 :Int32;
  reverseStartLsn @1 :UInt64;          # version 5, probation: the reverse stream starts after it
  sections @2 :List(SectionVersion);   # ... and its records name these by index
}

struct Rollback {          # version 5, successor -> standby: a planned rollback starts
  reason @0 :Text;
}

struct Promote {           # version 5, successor -> standby: probation is over; exit
  reason @0 :Text;
}

struct Abort {             # either way: the upgrade is off
  reason @0 :Text;
}

struct Message {
  union {
    hello @0 :Hello;
    welcome @1 :Welcome;
    checkpointReady @2 :CheckpointReady;
    restored @3 :Restored;
    frozen @4 :Frozen;
    fdBatch @5 :FdBatch;
    prepared @6 :Prepared;
    commit @7 :Commit;
    abort @8 :Abort;
    serving @9 :Serving;
    progress @10 :Progress;
    earlyFds @11 :EarlyFds;
    rollback @12 :Rollback;
    promote @13 :Promote;
    shadow @14 :Shadow;
  }
}
