// The greylisting triplet's sender as postgrey keys it (edge/greylist_sender.h): the
// bounce addresses that mailing lists, forwarders and big senders make per message or
// per day, from real-world shapes, each rewritten to one sender, so that the next
// message of the same list is not greylisted again. Each rule has its own case.
#include <doctest/doctest.h>

#include <string>

#include "edge/greylist.h"
#include "edge/greylist_sender.h"

using namespace smtpscreen;

namespace {

// The sender part of the triplet, through the whole path a MAIL FROM takes.
std::string sender_of(const char* mail_from) {
    const std::string key = greylist_triplet(*Endpoint::parse_ip("192.0.2.1"), NetworkPrefix{}, mail_from, "u@x.example");
    const std::string prefix = "192.0.2.0/24:";
    REQUIRE(key.compare(0, prefix.size(), prefix) == 0);
    const std::string rest = key.substr(prefix.size());
    return rest.substr(0, rest.rfind(":u@x.example"));
}

}  // namespace

TEST_CASE("greylist sender: plain addresses, the null sender and addresses without a domain stay") {
    CHECK(greylist_sender_key("alice@example.com") == "alice@example.com");
    CHECK(greylist_sender_key("") == "");
    CHECK(greylist_sender_key("postmaster") == "postmaster");
    // Digits inside a word are part of the name, not a message number.
    CHECK(greylist_sender_key("user123@example.com") == "user123@example.com");
    CHECK(greylist_sender_key("r2d2_42@example.com") == "r2d2_42@example.com");
    // The domain is never rewritten, digits or not.
    CHECK(greylist_sender_key("info@mail42.example.com") == "info@mail42.example.com");
}

TEST_CASE("greylist sender: a VERP or sub-address extension goes (Mailman, Google Groups, GitHub)") {
    // Mailman's VERP: the recipient after '+'.
    CHECK(greylist_sender_key("users-bounces+alice=example.com@lists.example.org") == "users-bounces@lists.example.org");
    CHECK(sender_of("users-bounces+alice=example.com@lists.example.org") ==
          sender_of("users-bounces+bob=example.net@lists.example.org"));
    // Google Groups: a per-message token after '+'.
    CHECK(sender_of("my-list+bncBDE5LHFRZ4ARBWHX3CVQMGQEFSZ3M5A@googlegroups.com") == "my-list@googlegroups.com");
    CHECK(sender_of("my-list+bncBDE5LHFRZ4ARBWHX3CVQMGQEFSZ3M5A@googlegroups.com") ==
          sender_of("my-list+bncAABBCCDDEEFFGG4455@googlegroups.com"));
    // Everything from the first '+' on.
    CHECK(greylist_sender_key("noreply+a+b@github.com") == "noreply@github.com");
}

TEST_CASE("greylist sender: numbers that are whole words become # (ezmlm, bulk senders)") {
    // ezmlm: list-return-<message number>-<recipient>.
    CHECK(greylist_sender_key("debian-devel-return-81234-alice=example.com@lists.debian.org") ==
          "debian-devel-return-#-alice=example.com@lists.debian.org");
    CHECK(sender_of("announce-return-1041-alice=example.com@lists.example.org") ==
          sender_of("announce-return-1042-alice=example.com@lists.example.org"));
    // Several numbers, and a local part that is one.
    CHECK(greylist_sender_key("bounce-1234567-89@mail.example.com") == "bounce-#-#@mail.example.com");
    CHECK(greylist_sender_key("20240611.1830@example.net") == "#.#@example.net");
    CHECK(greylist_sender_key("12345@example.com") == "#@example.com");
}

TEST_CASE("greylist sender: BATV's per-message tag goes, in either order") {
    // prvs=TAG=local (RFC draft order): key 0, day 123, hash a1b2c3.
    CHECK(greylist_sender_key("prvs=0123a1b2c3=bounces@example.net") == "bounces@example.net");
    CHECK(sender_of("PRVS=0123A1B2C3=Bounces@Example.NET") == sender_of("prvs=2456ffee01=bounces@example.net"));
    // prvs=local=TAG, as some senders write it.
    CHECK(greylist_sender_key("prvs=alice=1321e0c2d8@example.org") == "alice@example.org");
    // Neither or both look like a tag: the standard order (postgrey's coin).
    CHECK(greylist_sender_key("prvs=abc=def@example.org") == "def@example.org");
    // Not three fields: not BATV as postgrey reads it, and then only the other rules.
    CHECK(greylist_sender_key("prvs=0123a1b2c3@example.org") == "prvs=0123a1b2c3@example.org");
    CHECK(greylist_sender_key("prvs=a=b=c@example.org") == "prvs=a=b=c@example.org");
    CHECK(greylist_sender_key("prvs=alice=@example.org") == "prvs=alice=@example.org");
    // The tag's digits would otherwise make a new sender per message, even with the
    // numbers rule ("0123a1b2c3" is one word).
    CHECK(sender_of("prvs=1040bbccdd=list@example.org") == sender_of("prvs=1041ccddee=list@example.org"));
}

TEST_CASE("greylist sender: SRS forwarders' addresses are their original sender") {
    // postsrsd and libsrs2: SRS0=HASH=TT=domain=local@forwarder; HASH and TT change
    // daily, and with them the address, for the same original sender.
    CHECK(greylist_sender_key("srs0=xq7z=2v=example.com=alice@forwarder.example.net") == "alice@example.com");
    CHECK(sender_of("SRS0=xQ7Z=2V=example.com=alice@forwarder.example.net") ==
          sender_of("SRS0=Pm3a=2W=example.com=alice@forwarder.example.net"));
    // postsrsd's SRS_SEPARATOR may be '+' or '-' after SRS0 (and '+' is no extension here).
    CHECK(greylist_sender_key("srs0+xq7z=2v=example.com=alice@forwarder.example.net") == "alice@example.com");
    CHECK(greylist_sender_key("srs0-xq7z=2v=example.com=alice@forwarder.example.net") == "alice@example.com");
    // A local part with '=' of its own stays whole.
    CHECK(greylist_sender_key("srs0=h=tt=example.com=a=b@fwd.example") == "a=b@example.com");
    // SRS1: a second forwarder wrapped the first one's SRS0 address.
    CHECK(greylist_sender_key("srs1=ab12=fwd1.example==xq7z=2v=example.com=alice@fwd2.example") ==
          "alice@example.com");
    // The original goes through the other rules: BATV inside SRS, a VERP extension.
    CHECK(greylist_sender_key("srs0=xq7z=2v=example.com=prvs=0123a1b2c3=bounces@fwd.example") ==
          "bounces@example.com");
    CHECK(greylist_sender_key("srs0=xq7z=2v=lists.example.org=list+99@fwd.example") == "list@lists.example.org");
    // Not SRS: too few fields, an empty one, an unknown version: only the other rules.
    CHECK(greylist_sender_key("srs0=xq7z=2v=alice@fwd.example") == "srs0=xq7z=2v=alice@fwd.example");
    CHECK(greylist_sender_key("srs0==2v=example.com=alice@fwd.example") == "srs0==2v=example.com=alice@fwd.example");
    CHECK(greylist_sender_key("srs2=xq7z=2v=example.com=alice@fwd.example") ==
          "srs2=xq7z=2v=example.com=alice@fwd.example");
    CHECK(greylist_sender_key("srs1=ab12=fwd1.example=xq7z=2v=example.com=alice@fwd2.example") ==
          "srs1=ab12=fwd1.example=xq7z=2v=example.com=alice@fwd2.example");
    CHECK(greylist_sender_key("srs0stuff@example.com") == "srs0stuff@example.com");
}

TEST_CASE("greylist sender: only the sender is rewritten, never the recipient") {
    const std::string key =
        greylist_triplet(*Endpoint::parse_ip("192.0.2.1"), NetworkPrefix{}, "list+1@example.org", "bob+42@example.net");
    CHECK(key == "192.0.2.0/24:list@example.org:bob+42@example.net");
}
