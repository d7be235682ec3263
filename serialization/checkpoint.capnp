# Checkpoint chunk schema. A section's data in a checkpoint segment is a run of chunks;
# each chunk's payload is one single-segment Cap'n Proto message whose root is a Chunk.
# docs/checkpoint-format.md describes the framing around it.
@0xf717f6883466e9a6;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::wire");

struct Chunk {
  records @0 :List(Record);
}

struct Record {
  key @0 :Data;
  expiresAtMs @1 :Int64;       # Unix ms; 0 = never. Written by every version; v1 ignores it.
  value :union {
    string @2 :Data;
    list @3 :List(Data);
    set @4 :List(Data);
    hash @5 :List(FieldValue);
    zset @6 :List(ScoredMember); # ascending (score, member)
  }
}

struct FieldValue {
  field @0 :Data;
  value @1 :Data;
}

struct ScoredMember {
  score @0 :Float64;
  member @1 :Data;
}
