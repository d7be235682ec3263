# sessiond's records, version 2: Session gains lastHitMs at the next ordinal. Version 1
# reads it as 0 and keeps it when it changes a session (Cap'n Proto's evolution rules).
@0xd9a3e6c1b2f40517;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sessiond");

struct Session @0xc41d7e2a9b6f3058 {
  user @0 :Text;
  hits @1 :UInt64;
  createdMs @2 :Int64;
  lastHitMs @3 :Int64;   # new in v2: when the session was last hit, Unix ms
}

struct Limit @0xe83b5f1c07a2d694 {
  windowStartMs @0 :Int64;
  count @1 :UInt32;
}
