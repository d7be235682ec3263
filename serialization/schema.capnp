# The schema of a typed section (baton/table.h), as it travels in WELCOME: the record's
# root struct and every node it depends on, as Cap'n Proto's own schema nodes, so the
# successor's SchemaLoader can compare them with its own before any state moves.
# docs/protocol.md, "Typed sections".
@0xc3f1c0b87a1e5d42;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("baton::wire");

using Schema = import "/capnp/schema.capnp";

struct TypedSchema {
  typeId @0 :UInt64;            # the record's root struct
  nodes @1 :List(Schema.Node);  # the root struct first, then its dependencies
}
