#pragma once
// The sender of a greylisting triplet as postgrey keys it (its do_sender_substitutions),
// so that the bounce addresses a mailing list or a big sender makes per message or per
// day do not each start a new wait: one list is one sender. Pure, no I/O.
//
// From an address already in lower case without a source route (greylist_address),
// the local part is rewritten in this order (the domain stays, except under SRS):
//   1. SRS, the Sender Rewriting Scheme of forwarders (SRS0=HASH=TT=domain=local@fwd,
//      SRS1=HASH=fwd1==HASH=TT=domain=local@fwd2, the separator after SRS0/SRS1 one
//      of = + -): the original sender, local@domain, whose hash and day stamp change
//      daily. postgrey has no such rule; without it a forwarder's retry after midnight
//      would be a new triplet.
//   2. BATV (prvs=TAG=local, or the swapped prvs=local=TAG some senders write): the
//      local part without its per-message tag, the field that does not start with ten
//      [0-9a-z] being the address (postgrey's coin toss: the standard order when both
//      or neither do).
//   3. A VERP or sub-address extension: everything from the first '+' on goes.
//   4. Each run of digits that is a whole word (bounded by neither a letter, a digit
//      nor '_': Perl's \b\d+\b) becomes '#' ("bounce-1234-5@" is "bounce-#-#@").
// An address without '@' (the null sender "") is returned as it is.
#include <string>
#include <string_view>

namespace smtpscreen {

std::string greylist_sender_key(std::string_view address);

}  // namespace smtpscreen
