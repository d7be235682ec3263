# The consumer's own record type, for a typed section (baton::Table).
@0xf0e1d2c3b4a59687;

struct Visit {
  path @0 :Text;
  count @1 :UInt32;
}
