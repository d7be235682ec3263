// Typed sections' Cap'n Proto side: a struct's schema as it travels in WELCOME, the
// compatibility check at HELLO, and the check of every record that comes from a peer.
#pragma once

#include <capnp/schema.h>

#include <string_view>

#include "baton/result.h"
#include "baton/section.h"

namespace baton::serialization {

/// `root` and every node its records can reach (fields' structs, groups and enums, list
/// elements), encoded as serialization/schema.capnp's TypedSchema.
TypedSchema describe_schema(capnp::StructSchema root);

/// Whether the peer's schema (`theirs`, as encoded by describe_schema) and `mine` describe
/// the same struct under Cap'n Proto's evolution rules: same id, and each node one an
/// upgrade of the other (SchemaLoader). The error names the section, both types and
/// SchemaLoader's reason.
Result<void> check_schema_compatible(std::string_view section, const TypedSchema& mine,
                                     std::string_view theirs);

/// Whether `bytes` are one canonical, single-segment Cap'n Proto message whose root is a
/// struct: what Table stores and reads without bounds checks. `bytes` must be 8-aligned.
Result<void> check_record(std::string_view bytes);

}  // namespace baton::serialization
