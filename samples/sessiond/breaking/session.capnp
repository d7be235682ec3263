# A deliberately incompatible change, for the tests: Limit.count widens from UInt32 to
# UInt64 under the same struct, which moves its bits. An upgrade between this build and
# another is refused at WELCOME, before any state moves.
@0xd9a3e6c1b2f40517;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("sessiond");

struct Session @0xc41d7e2a9b6f3058 {
  user @0 :Text;
  hits @1 :UInt64;
  createdMs @2 :Int64;
}

struct Limit @0xe83b5f1c07a2d694 {
  windowStartMs @0 :Int64;
  count @1 :UInt64;
}
