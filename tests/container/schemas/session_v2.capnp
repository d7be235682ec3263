# session.capnp with a field added at the next ordinal and an enumerant added: compatible.
@0xa7f0c1d2e3b4a596;

enum Plan {
  free @0;
  paid @1;
  trial @2;
}

struct Session @0xe1d2c3b4a5968778 {
  user @0 :Text;
  hits @1 :UInt64;
  tags @2 :List(Text);
  plan @3 :Plan;
  limit :group {
    perMinute @4 :UInt32;
    burst @5 :UInt32;
  }
  lastSeenMs @6 :Int64;
}
