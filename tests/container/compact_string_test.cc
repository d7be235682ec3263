// CompactString: the inline/heap boundary, aliasing, growth and the size limit, checked
// against std::string doing the same operations.
#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <string>

#include "baton/compact_string.h"
#include "baton/tracked_map.h"

namespace baton {
namespace {

TEST(CompactString, HoldsFifteenBytesInlineAndMoreOnTheHeap) {
  const std::string fifteen(15, 'a');
  CompactString s(fifteen);
  EXPECT_EQ(s.view(), fifteen);
  EXPECT_EQ(s.capacity(), CompactString::kInline);
  const auto* self = reinterpret_cast<const char*>(&s);
  EXPECT_TRUE(s.data() >= self && s.data() < self + sizeof s) << "15 bytes must be inline";

  s.append("b");
  EXPECT_EQ(s.view(), fifteen + "b");
  EXPECT_FALSE(s.data() >= self && s.data() < self + sizeof s) << "16 bytes go to the heap";

  s.assign("short");  // back inline: the heap block is freed (ASan would see a leak)
  EXPECT_EQ(s.view(), "short");
  EXPECT_EQ(s.capacity(), CompactString::kInline);
  EXPECT_TRUE(CompactString().empty());
  EXPECT_EQ(CompactString("").size(), 0u);
}

TEST(CompactString, ExactSizeBlockAndGeometricGrowth) {
  const std::string hundred(100, 'v');
  CompactString s(hundred);
  EXPECT_EQ(s.capacity(), 100u) << "a SET value takes exactly its size";
  size_t reallocations = 0;
  const char* last = s.data();
  for (int i = 0; i < 10000; ++i) {
    s += 'x';
    if (s.data() != last) ++reallocations, last = s.data();
  }
  EXPECT_EQ(s.size(), 10100u);
  EXPECT_LE(reallocations, 10u) << "appends must grow the block geometrically";
}

TEST(CompactString, AssignAndAppendMayViewTheirOwnBytes) {
  for (size_t n : {3u, 15u, 16u, 40u}) {
    std::string ref(n, 'q');
    for (size_t i = 0; i < n; ++i) ref[i] = static_cast<char>('a' + i % 26);
    CompactString s(ref);
    s.append(s.view());  // doubles, from its own bytes, across the inline boundary
    EXPECT_EQ(s.view(), ref + ref) << n;
    s.assign(s.view().substr(1, n));  // shrinks from a view into itself
    EXPECT_EQ(s.view(), (ref + ref).substr(1, n)) << n;
    s.assign(s.view().substr(0, 5));  // heap to inline from its own block
    EXPECT_EQ(s.view(), (ref + ref).substr(1, n).substr(0, 5)) << n;
  }
}

TEST(CompactString, CopiesMovesAndComparesLikeStdString) {
  std::mt19937_64 rng(12);
  for (int round = 0; round < 2000; ++round) {
    std::string a_ref(rng() % 40, 'x'), b_ref(rng() % 40, 'y');
    for (auto& c : a_ref) c = static_cast<char>('a' + rng() % 3);
    for (auto& c : b_ref) c = static_cast<char>('a' + rng() % 3);
    CompactString a(a_ref), b(b_ref);
    switch (rng() % 5) {
      case 0:
        a = b, a_ref = b_ref;
        break;
      case 1:
        a = std::move(b), a_ref = b_ref, b_ref.clear();
        EXPECT_TRUE(b.empty());
        break;
      case 2:
        a.append(b), a_ref += b_ref;
        break;
      case 3:
        a.clear(), a_ref.clear();
        break;
      default: {
        CompactString c(std::move(a));
        a = c;
      }
    }
    ASSERT_EQ(a.view(), a_ref) << round;
    ASSERT_EQ(b.view(), b_ref) << round;
    ASSERT_EQ(a == b, a_ref == b_ref) << round;
    ASSERT_EQ(a == std::string_view(b_ref), a_ref == b_ref) << round;
  }
}

TEST(CompactString, EmptyViewsWithNullDataAreFine) {
  // Cap'n Proto's empty Data and a default std::string_view have a null data(); copying 0
  // bytes from null is undefined behaviour that UBSan reports (the fuzzer found it).
  const std::string_view null_empty;
  ASSERT_EQ(null_empty.data(), nullptr);
  CompactString s(null_empty);
  EXPECT_TRUE(s.empty());
  s.append(null_empty);
  s.assign("x");
  s.append(null_empty);
  EXPECT_EQ(s.view(), "x");
  s.assign(null_empty);
  EXPECT_TRUE(s.empty());
  CompactString heap(std::string(30, 'h'));
  heap.append(null_empty);
  heap.assign(null_empty);
  EXPECT_TRUE(heap.empty());
}

TEST(CompactString, RefusesMoreThanItsLimitWithoutChangingTheString) {
  CompactString s("kept");
  // A view of kMaxSize + 1 bytes is never read: the size is checked first.
  const std::string_view huge(s.data(), CompactString::kMaxSize + 1);
  EXPECT_THROW(s.assign(huge), std::length_error);
  EXPECT_EQ(s.view(), "kept");
  CompactString heap(std::string(20, 'h'));
  EXPECT_THROW(heap.append(std::string_view(s.data(), CompactString::kMaxSize)), std::length_error);
  EXPECT_EQ(heap.view(), std::string(20, 'h'));
}

TEST(CompactString, EntryTakesThirtyTwoBytes) {
  // The layout the memory per key rests on (docs/design.md, "Memory per key").
  EXPECT_EQ(sizeof(CompactString), 16u);
  EXPECT_EQ(sizeof(Entry), 32u);
  Entry e;
  e.value = std::string("from a std::string");
  EXPECT_EQ(e.str(), "from a std::string");
  e.own_string() += "!";
  EXPECT_EQ(e.str(), "from a std::string!");
}

}  // namespace
}  // namespace baton
