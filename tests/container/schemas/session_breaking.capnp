# session.capnp with a field's type changed: not compatible.
@0xa7f0c1d2e3b4a596;

enum Plan {
  free @0;
  paid @1;
}

struct Session @0xe1d2c3b4a5968778 {
  user @0 :Text;
  hits @1 :Text;
  tags @2 :List(Text);
  plan @3 :Plan;
  limit :group {
    perMinute @4 :UInt32;
    burst @5 :UInt32;
  }
}
