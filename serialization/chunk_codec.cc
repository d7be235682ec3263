// Cap'n Proto side of checkpoint chunks. kj::Exception is caught here and becomes an Error.
#include "chunk_codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>

#include "checkpoint.capnp.h"

namespace baton::serialization {
namespace {

// A Record list element: two data words and two pointers.
constexpr uint64_t kMinRecordBytes = 32;

// Hands Cap'n Proto one pre-zeroed region as its only segment. Asking for a second
// segment means the chunk does not fit: we refuse rather than scatter it.
class RegionMessageBuilder final : public capnp::MessageBuilder {
 public:
  explicit RegionMessageBuilder(kj::ArrayPtr<capnp::word> region) : region_(region) {}
  kj::ArrayPtr<capnp::word> allocateSegment(uint minimum_size) override {
    if (given_ || minimum_size > region_.size()) {
      KJ_FAIL_REQUIRE("checkpoint chunk does not fit the remaining segment capacity");
    }
    given_ = true;
    return region_;
  }

 private:
  kj::ArrayPtr<capnp::word> region_;
  bool given_ = false;
};

capnp::Data::Reader as_data(std::string_view s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

std::string_view view(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

void fill(wire::Record::Builder r, std::string_view key, const Entry& e) {
  r.setKey(as_data(key));
  r.setExpiresAtMs(e.expires_at_ms);
  auto v = r.initValue();
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, CompactString>) {
          v.setString(as_data(x));
        } else if constexpr (std::is_same_v<T, Borrowed>) {
          v.setString(as_data(x.view()));
        } else if constexpr (std::is_same_v<T, Box<List>> || std::is_same_v<T, Box<Set>>) {
          auto l = std::is_same_v<T, Box<List>> ? v.initList(x->size()) : v.initSet(x->size());
          uint i = 0;
          for (const auto& m : *x) l.set(i++, as_data(m));
        } else if constexpr (std::is_same_v<T, Box<Hash>>) {
          auto l = v.initHash(x->size());
          uint i = 0;
          for (const auto& [f, val] : *x) {
            l[i].setField(as_data(f));
            l[i].setValue(as_data(val));
            ++i;
          }
        } else {
          auto l = v.initZset(x->size());
          uint i = 0;
          for (const auto& [score, m] : x->ordered()) {
            l[i].setScore(score);
            l[i].setMember(as_data(m));
            ++i;
          }
        }
      },
      e.value);
}

// Smallest encoding of one collection element: a pointer (Data) or a 2-word struct.
constexpr size_t kMinElementBytes = 8;

Result<Entry> materialize(wire::Record::Reader r, bool borrow, size_t message_bytes) {
  Entry e;
  auto check_count = [&](size_t n, const char* what) -> Result<void> {
    if (n == 0) return Error(ErrorKind::kCorrupt, std::string("record holds an empty ") + what);
    if (n > message_bytes / kMinElementBytes) {
      return Error(ErrorKind::kCorrupt, std::string("record's ") + what + " claims " +
                                            std::to_string(n) + " elements, more than " +
                                            std::to_string(message_bytes) + " bytes can hold");
    }
    return ok();
  };
  e.expires_at_ms = r.getExpiresAtMs();
  auto v = r.getValue();
  switch (v.which()) {
    case wire::Record::Value::STRING: {
      std::string_view bytes = view(v.getString());
      if (borrow) {
        e.value = Borrowed{bytes.data(), bytes.size()};
      } else {
        e.value = CompactString(bytes);
      }
      break;
    }
    case wire::Record::Value::LIST: {
      List l;
      auto in = v.getList();
      BATON_TRY(check_count(in.size(), "list"));
      for (auto m : in) l.emplace_back(view(m));
      e.value = Box<List>(std::move(l));
      break;
    }
    case wire::Record::Value::SET: {
      Set s;
      auto in = v.getSet();
      BATON_TRY(check_count(in.size(), "set"));
      s.reserve(in.size());
      for (auto m : in) s.emplace(view(m));
      if (s.size() != in.size()) return Error(ErrorKind::kCorrupt, "set holds a member twice");
      e.value = Box<Set>(std::move(s));
      break;
    }
    case wire::Record::Value::HASH: {
      Hash h;
      auto in = v.getHash();
      BATON_TRY(check_count(in.size(), "hash"));
      h.reserve(in.size());
      for (auto fv : in) h.emplace(view(fv.getField()), view(fv.getValue()));
      if (h.size() != in.size()) return Error(ErrorKind::kCorrupt, "hash holds a field twice");
      e.value = Box<Hash>(std::move(h));
      break;
    }
    case wire::Record::Value::ZSET: {
      ZSet z;
      auto in = v.getZset();
      BATON_TRY(check_count(in.size(), "zset"));
      for (auto sm : in) {
        double score = sm.getScore();
        if (score != score) return Error(ErrorKind::kCorrupt, "zset score is NaN");
        if (!z.add(score, view(sm.getMember()))) {
          return Error(ErrorKind::kCorrupt, "zset holds a member twice");
        }
      }
      e.value = Box<ZSet>(std::move(z));
      break;
    }
    default:
      return Error(ErrorKind::kCorrupt, "record value has unknown type " +
                                            std::to_string(static_cast<int>(v.which())) +
                                            " (written by a newer format?)");
  }
  return e;
}

}  // namespace

Result<size_t> encode_chunk(std::span<const RecordRef> records, std::byte* out,
                            size_t capacity_bytes) {
  // Standard framing: [u32 segment count - 1 = 0][u32 words] then the segment.
  if (capacity_bytes < 16 || records.size() > (1u << 28)) {
    return Error(ErrorKind::kCapacity, "no room for a checkpoint chunk");
  }
  for (const auto& [key, entry] : records) {
    size_t n = key.size();
    if (entry->is_string()) n = std::max(n, entry->str().size());
    if (auto* l = entry->list()) n = std::max(n, l->size());
    if (auto* st = entry->set()) n = std::max(n, st->size());
    if (auto* h = entry->hash()) n = std::max(n, h->size());
    if (auto* z = entry->zset()) n = std::max(n, z->size());
    if (n > kMaxBlobBytes) {
      return Error(ErrorKind::kCapacity,
                   "key '" + std::string(key.substr(0, 64)) + "' holds " + std::to_string(n) +
                       " bytes or elements in one value; a checkpoint carries at most " +
                       std::to_string(kMaxBlobBytes) + " per key, value or collection");
    }
  }
  size_t words = std::min<size_t>((capacity_bytes - 8) / 8, size_t{1} << 28);
  auto* first = reinterpret_cast<capnp::word*>(out + 8);
  try {
    RegionMessageBuilder builder(kj::arrayPtr(first, words));
    auto chunk = builder.initRoot<wire::Chunk>();
    auto list = chunk.initRecords(static_cast<uint>(records.size()));
    for (size_t i = 0; i < records.size(); ++i) {
      fill(list[static_cast<uint>(i)], records[i].first, *records[i].second);
    }
    auto segments = builder.getSegmentsForOutput();
    uint32_t table[2] = {0, static_cast<uint32_t>(segments[0].size())};
    std::memcpy(out, table, sizeof table);
    return 8 + segments[0].size() * sizeof(capnp::word);
  } catch (const kj::Exception& e) {
    return Error(ErrorKind::kCapacity, std::string("encoding a checkpoint chunk of ") +
                                           std::to_string(records.size()) +
                                           " records: " + e.getDescription().cStr());
  }
}

Result<void> decode_chunk(std::span<const std::byte> message, uint64_t expected_records,
                          bool borrow, std::vector<std::pair<std::string, Entry>>& out) {
  if (message.size() % 8 != 0 || message.size() < 16) {
    return Error(ErrorKind::kCorrupt, "chunk message of " + std::to_string(message.size()) +
                                          " bytes is not whole words");
  }
  try {
    capnp::ReaderOptions limits;
    // Every word may be visited at most once or twice; anything more is an amplification
    // attack or corruption, so the limit is the message's own size (plus slack).
    limits.traversalLimitInWords = message.size() / 8 * 2 + 64;
    limits.nestingLimit = 8;
    capnp::FlatArrayMessageReader reader(
        kj::arrayPtr(reinterpret_cast<const capnp::word*>(message.data()), message.size() / 8),
        limits);
    auto records = reader.getRoot<wire::Chunk>().getRecords();
    // Counted before anything is materialized: Cap'n Proto charges a zero-sized struct
    // almost nothing, so the list length alone must not size an allocation.
    if (records.size() != expected_records) {
      return Error(ErrorKind::kCorrupt, "chunk holds " + std::to_string(records.size()) +
                                            " records, its header says " +
                                            std::to_string(expected_records));
    }
    if (uint64_t{records.size()} * kMinRecordBytes > message.size()) {
      return Error(ErrorKind::kCorrupt, "chunk claims " + std::to_string(records.size()) +
                                            " records in only " + std::to_string(message.size()) +
                                            " bytes");
    }
    out.reserve(out.size() + records.size());
    uint64_t n = 0;
    for (auto r : records) {
      auto entry = materialize(r, borrow, message.size());
      if (!entry.ok()) return std::move(entry).error().with_context("record " + std::to_string(n));
      out.emplace_back(view(r.getKey()), std::move(entry).value());
      ++n;
    }
    return ok();
  } catch (const kj::Exception& e) {
    return Error(ErrorKind::kCorrupt,
                 std::string("chunk message does not parse: ") + e.getDescription().cStr());
  }
}

}  // namespace baton::serialization
