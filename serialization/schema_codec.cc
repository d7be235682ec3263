// Typed sections: schema nodes out, SchemaLoader's verdict and record checks in.
#include "schema_codec.h"

#include <capnp/message.h>
#include <capnp/schema-loader.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "schema.capnp.h"

namespace baton::serialization {
namespace {

void collect(capnp::Schema s, std::vector<capnp::Schema>& out, std::set<uint64_t>& seen);

void collect_type(capnp::Type t, std::vector<capnp::Schema>& out, std::set<uint64_t>& seen) {
  while (t.isList()) t = t.asList().getElementType();
  if (t.isStruct()) collect(t.asStruct(), out, seen);
  if (t.isEnum()) collect(t.asEnum(), out, seen);
}

void collect(capnp::Schema s, std::vector<capnp::Schema>& out, std::set<uint64_t>& seen) {
  if (!seen.insert(s.getProto().getId()).second) return;
  out.push_back(s);
  if (!s.getProto().isStruct()) return;
  for (auto field : s.asStruct().getFields()) collect_type(field.getType(), out, seen);
}

std::string hex(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(id));
  return buf;
}

// A Cap'n Proto reader needs 8-aligned words; a std::string promises no more than 1.
kj::Array<capnp::word> aligned_copy(std::string_view bytes) {
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), words.size() * sizeof(capnp::word));
  return words;
}

std::string kj_reason(const kj::Exception& e) { return std::string(e.getDescription().cStr()); }

const char* type_name(capnp::schema::Type::Which w) {
  using W = capnp::schema::Type;
  switch (w) {
    case W::VOID:
      return "Void";
    case W::BOOL:
      return "Bool";
    case W::INT8:
      return "Int8";
    case W::INT16:
      return "Int16";
    case W::INT32:
      return "Int32";
    case W::INT64:
      return "Int64";
    case W::UINT8:
      return "UInt8";
    case W::UINT16:
      return "UInt16";
    case W::UINT32:
      return "UInt32";
    case W::UINT64:
      return "UInt64";
    case W::FLOAT32:
      return "Float32";
    case W::FLOAT64:
      return "Float64";
    case W::TEXT:
      return "Text";
    case W::DATA:
      return "Data";
    case W::LIST:
      return "a List";
    case W::ENUM:
      return "an enum";
    case W::STRUCT:
      return "a struct";
    case W::INTERFACE:
      return "an interface";
    case W::ANY_POINTER:
      return "AnyPointer";
  }
  return "another type";
}

// SchemaLoader says what kind of change it refused, not where: name the first field, by
// ordinal, whose kind or place differs between two versions of one struct.
std::string first_changed_field(capnp::List<capnp::schema::Node>::Reader mine,
                                capnp::List<capnp::schema::Node>::Reader theirs) {
  for (auto t : theirs) {
    if (!t.isStruct()) continue;
    for (auto m : mine) {
      if (m.getId() != t.getId() || !m.isStruct()) continue;
      auto mf = m.getStruct().getFields();
      auto tf = t.getStruct().getFields();
      for (auto a : mf) {
        for (auto b : tf) {
          if (a.getCodeOrder() != b.getCodeOrder() || !a.isSlot() || !b.isSlot()) continue;
          if (!a.getOrdinal().isExplicit() || !b.getOrdinal().isExplicit() ||
              a.getOrdinal().getExplicit() != b.getOrdinal().getExplicit()) {
            continue;
          }
          const auto wa = a.getSlot().getType().which(), wb = b.getSlot().getType().which();
          if (wa != wb || a.getSlot().getOffset() != b.getSlot().getOffset()) {
            return std::string("field '") + a.getName().cStr() + "' (@" +
                   std::to_string(a.getOrdinal().getExplicit()) + ") of " +
                   m.getDisplayName().cStr() + " is " + type_name(wa) + " here and " +
                   type_name(wb) + " in the peer; ";
          }
        }
      }
    }
  }
  return "";
}

}  // namespace

TypedSchema describe_schema(capnp::StructSchema root) {
  std::vector<capnp::Schema> nodes;
  std::set<uint64_t> seen;
  collect(root, nodes, seen);
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<wire::TypedSchema>();
  out.setTypeId(root.getProto().getId());
  auto list = out.initNodes(static_cast<unsigned>(nodes.size()));
  for (unsigned i = 0; i < nodes.size(); ++i) list.setWithCaveats(i, nodes[i].getProto());
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return TypedSchema{root.getProto().getId(), std::string(root.getShortDisplayName().cStr()),
                     std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size())};
}

Result<void> check_schema_compatible(std::string_view section, const TypedSchema& mine,
                                     std::string_view theirs) {
  const std::string where = "typed section '" + std::string(section) + "'";
  if (theirs.empty() || theirs.size() % sizeof(capnp::word) != 0) {
    return Error(ErrorKind::kCorrupt, where + ": the peer's schema is " +
                                          std::to_string(theirs.size()) +
                                          " bytes, not a Cap'n Proto message");
  }
  auto words = aligned_copy(theirs);
  auto own_words = aligned_copy(mine.encoded);
  try {
    capnp::SchemaLoader loader;
    capnp::FlatArrayMessageReader own_message(own_words);
    for (auto node : own_message.getRoot<wire::TypedSchema>().getNodes()) loader.load(node);

    capnp::ReaderOptions limits;
    limits.traversalLimitInWords = words.size() * 2 + 64;
    capnp::FlatArrayMessageReader peer_message(words, limits);
    auto peer = peer_message.getRoot<wire::TypedSchema>();
    if (peer.getTypeId() != mine.type_id) {
      std::string their_name = hex(peer.getTypeId());
      for (auto node : peer.getNodes()) {
        if (node.getId() == peer.getTypeId()) their_name = node.getDisplayName().cStr();
      }
      return Error(ErrorKind::kVersion,
                   where + " holds records of " + their_name + " in the peer and of " +
                       mine.type_name + " (" + hex(mine.type_id) +
                       ") here: another struct. Keep the struct (its id) and add fields, or "
                       "give the section a new schema version with migrations");
    }
    try {
      for (auto node : peer.getNodes()) loader.load(node);
    } catch (const kj::Exception& e) {
      return Error(ErrorKind::kVersion,
                   where + " (" + mine.type_name +
                       "): the peer's schema is not compatible with this build's under Cap'n "
                       "Proto's evolution rules: " +
                       first_changed_field(own_message.getRoot<wire::TypedSchema>().getNodes(),
                                           peer.getNodes()) +
                       kj_reason(e) +
                       ". New fields at higher ordinals and renames are compatible; anything "
                       "else needs a new schema version with migrations both ways");
    }
  } catch (const kj::Exception& e) {
    return Error(ErrorKind::kVersion, where + " (" + mine.type_name +
                                          "): the peer's schema cannot be read: " + kj_reason(e));
  }
  return ok();
}

Result<void> check_record(std::string_view bytes) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0) {
    return Error(ErrorKind::kCorrupt,
                 std::to_string(bytes.size()) + " bytes, not a whole number of Cap'n Proto words");
  }
  kj::ArrayPtr<const capnp::word> segments[1] = {kj::arrayPtr(
      reinterpret_cast<const capnp::word*>(bytes.data()), bytes.size() / sizeof(capnp::word))};
  try {
    capnp::ReaderOptions limits;
    limits.traversalLimitInWords = segments[0].size() * 2 + 64;
    capnp::SegmentArrayMessageReader reader(segments, limits);
    if (reader.getRoot<capnp::AnyPointer>().getPointerType() != capnp::PointerType::STRUCT) {
      return Error(ErrorKind::kCorrupt, "its root is not a struct");
    }
    if (!reader.isCanonical()) {
      return Error(ErrorKind::kCorrupt, "not in canonical form (capnp::canonicalize)");
    }
  } catch (const kj::Exception& e) {
    return Error(ErrorKind::kCorrupt, "not a valid Cap'n Proto message: " + kj_reason(e));
  }
  return ok();
}

}  // namespace baton::serialization
