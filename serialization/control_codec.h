// Encodes and decodes control messages (serialization/control.capnp). Cap'n Proto stays
// behind this header.
#pragma once

#include <string>
#include <string_view>

#include "baton/result.h"
#include "handoff/messages.h"

namespace baton::serialization {

/// One message as standard Cap'n Proto framing, ready to be one SEQPACKET packet.
std::string encode_message(const handoff::Message& m);

/// Parses one packet with reader limits sized to it. Errors name what is wrong; a
/// message type this build does not know is a kVersion error.
Result<handoff::Message> decode_message(std::string_view packet);

}  // namespace baton::serialization
