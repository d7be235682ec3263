# sessiond's records, version 1. v2/session.capnp adds a field at the next ordinal: the
# same structs (the same ids), so the two builds upgrade into each other with no migration.
@0xd9a3e6c1b2f40517;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sessiond");

struct Session @0xc41d7e2a9b6f3058 {
  user @0 :Text;
  hits @1 :UInt64;
  createdMs @2 :Int64;
}

struct Limit @0xe83b5f1c07a2d694 {   # one client's fixed one-second window
  windowStartMs @0 :Int64;
  count @1 :UInt32;
}
