#include <doctest/doctest.h>

#include "dnsbl/site.h"

using namespace smtpscreen;

namespace {

constexpr uint32_t ip(unsigned a, unsigned b, unsigned c, unsigned d) { return a << 24 | b << 16 | c << 8 | d; }

DnsblSite parse_ok(std::string_view text) {
    std::string error;
    auto site = parse_dnsbl_site(text, &error);
    INFO("site: ", text, " error: ", error);
    REQUIRE(site.has_value());
    CHECK(error.empty());
    return *site;
}

std::string parse_error(std::string_view text) {
    std::string error;
    auto site = parse_dnsbl_site(text, &error);
    INFO("site: ", text);
    CHECK_FALSE(site.has_value());
    CHECK_FALSE(error.empty());
    return error;
}

}  // namespace

TEST_CASE("dnsbl site without filter or weight lists on any answer with weight 1") {
    auto site = parse_ok("zen.spamhaus.org");
    CHECK(site.zone == "zen.spamhaus.org");
    CHECK(site.weight == 1);
    CHECK(site.filter.empty());
    CHECK(site.text == "zen.spamhaus.org");
    CHECK(site.matches(ip(127, 0, 0, 2)));
    CHECK(site.matches(ip(10, 1, 2, 3)));
}

TEST_CASE("dnsbl site zone is lower-cased and loses a trailing dot") {
    auto site = parse_ok("  ZEN.Spamhaus.ORG.*2 ");
    CHECK(site.zone == "zen.spamhaus.org");
    CHECK(site.weight == 2);
    CHECK(site.text == "ZEN.Spamhaus.ORG.*2");
}

TEST_CASE("dnsbl site exact filter matches only that address") {
    auto site = parse_ok("bl.example=127.0.0.4");
    REQUIRE(site.filter.size() == 1);
    CHECK(site.matches(ip(127, 0, 0, 4)));
    CHECK_FALSE(site.matches(ip(127, 0, 0, 2)));
    CHECK_FALSE(site.matches(ip(128, 0, 0, 4)));
}

TEST_CASE("dnsbl site range filter includes both bounds") {
    auto site = parse_ok("zen.spamhaus.org=127.0.0.[2..11]*3");
    CHECK(site.weight == 3);
    CHECK_FALSE(site.matches(ip(127, 0, 0, 1)));
    CHECK(site.matches(ip(127, 0, 0, 2)));
    CHECK(site.matches(ip(127, 0, 0, 7)));
    CHECK(site.matches(ip(127, 0, 0, 11)));
    CHECK_FALSE(site.matches(ip(127, 0, 0, 12)));
}

TEST_CASE("dnsbl site ranges in several octets and a negative weight (DNSWL)") {
    auto site = parse_ok("list.dnswl.org=127.0.[0..255].[1..3]*-2");
    CHECK(site.weight == -2);
    CHECK(site.matches(ip(127, 0, 0, 1)));
    CHECK(site.matches(ip(127, 0, 255, 3)));
    CHECK_FALSE(site.matches(ip(127, 0, 9, 0)));
    CHECK_FALSE(site.matches(ip(127, 1, 9, 1)));
}

TEST_CASE("dnsbl site bracket list mixes numbers and ranges") {
    auto site = parse_ok("wl.mailspike.net=127.0.0.[17;18;20..22]*-1");
    CHECK(site.weight == -1);
    CHECK(site.matches(ip(127, 0, 0, 17)));
    CHECK(site.matches(ip(127, 0, 0, 18)));
    CHECK_FALSE(site.matches(ip(127, 0, 0, 19)));
    CHECK(site.matches(ip(127, 0, 0, 21)));
    CHECK_FALSE(site.matches(ip(127, 0, 0, 23)));
}

TEST_CASE("dnsbl site filter may be a ';'-list of whole patterns") {
    auto site = parse_ok("bl.example=127.0.0.2;127.0.[1;2].[4..5]*5");
    CHECK(site.filter.size() == 2);
    CHECK(site.weight == 5);
    CHECK(site.matches(ip(127, 0, 0, 2)));
    CHECK(site.matches(ip(127, 0, 2, 5)));
    CHECK_FALSE(site.matches(ip(127, 0, 0, 4)));
    CHECK_FALSE(site.matches(ip(127, 0, 3, 4)));
}

TEST_CASE("dnsbl site weight forms") {
    CHECK(parse_ok("a.example*0").weight == 0);
    CHECK(parse_ok("a.example*+4").weight == 4);
    CHECK(parse_ok("a.example*-10").weight == -10);
    CHECK(parse_ok("a.example=127.0.0.2*-3").weight == -3);
}

TEST_CASE("dnsbl sites list splits on commas and whitespace") {
    std::vector<std::string> errors;
    auto sites = parse_dnsbl_sites(
        "zen.spamhaus.org=127.0.0.[2..11]*3, list.dnswl.org=127.0.[0..255].[1..3]*-2\n"
        "  bl.spamcop.net,,b.barracudacentral.org*2",
        &errors);
    CHECK(errors.empty());
    REQUIRE(sites.size() == 4);
    CHECK(sites[0].zone == "zen.spamhaus.org");
    CHECK(sites[1].weight == -2);
    CHECK(sites[2].zone == "bl.spamcop.net");
    CHECK(sites[3].weight == 2);
    CHECK(parse_dnsbl_sites("", &errors).empty());
    CHECK(parse_dnsbl_sites(" , ", &errors).empty());
    CHECK(errors.empty());
}

TEST_CASE("dnsbl sites list reports every bad site and keeps the good ones") {
    std::vector<std::string> errors;
    auto sites = parse_dnsbl_sites("good.example*2, bad.example*x, also.example=1.2.3, fine.example", &errors);
    REQUIRE(sites.size() == 2);
    CHECK(sites[0].zone == "good.example");
    CHECK(sites[1].zone == "fine.example");
    REQUIRE(errors.size() == 2);
    CHECK(errors[0].find("\"bad.example*x\"") != std::string::npos);
    CHECK(errors[1].find("\"also.example=1.2.3\"") != std::string::npos);
}

TEST_CASE("dnsbl site errors name the site and the problem") {
    SUBCASE("weight not a number") {
        auto e = parse_error("zen.example*x");
        CHECK(e.find("\"zen.example*x\"") != std::string::npos);
        CHECK(e.find("weight \"x\"") != std::string::npos);
    }
    SUBCASE("weight empty") { CHECK(parse_error("zen.example*").find("weight") != std::string::npos); }
    SUBCASE("weight with junk") { CHECK(parse_error("zen.example*3x").find("weight \"3x\"") != std::string::npos); }
    SUBCASE("two weights") { CHECK(parse_error("zen.example*3*4").find("weight") != std::string::npos); }
    SUBCASE("weight overflows int") { CHECK(parse_error("zen.example*99999999999").find("weight") != std::string::npos); }
    SUBCASE("empty filter") { CHECK(parse_error("zen.example=").find("no filter") != std::string::npos); }
    SUBCASE("empty filter before weight") { CHECK(parse_error("zen.example=*2").find("no filter") != std::string::npos); }
    SUBCASE("three octets") { CHECK(parse_error("zen.example=127.0.0").find("four octets") != std::string::npos); }
    SUBCASE("five octets") { CHECK(parse_error("zen.example=127.0.0.2.1").find("four octets") != std::string::npos); }
    SUBCASE("octet over 255") {
        auto e = parse_error("zen.example=127.0.0.256");
        CHECK(e.find("octet \"256\"") != std::string::npos);
    }
    SUBCASE("octet not a number") { CHECK(parse_error("zen.example=127.0.0.x").find("octet \"x\"") != std::string::npos); }
    SUBCASE("negative octet") { CHECK(parse_error("zen.example=127.0.0.-1").find("octet") != std::string::npos); }
    SUBCASE("empty octet") { CHECK(parse_error("zen.example=127..0.2").find("empty") != std::string::npos); }
    SUBCASE("range runs backwards") {
        CHECK(parse_error("zen.example=127.0.0.[11..2]").find("backwards") != std::string::npos);
    }
    SUBCASE("range bound over 255") { CHECK(parse_error("zen.example=127.0.0.[2..300]").find("[2..300]") != std::string::npos); }
    SUBCASE("range missing bound") { CHECK(parse_error("zen.example=127.0.0.[2..]").find("\"2..\"") != std::string::npos); }
    SUBCASE("range with three dots") { CHECK_FALSE(parse_error("zen.example=127.0.0.[2...5]").empty()); }
    SUBCASE("range with three bounds") { CHECK_FALSE(parse_error("zen.example=127.0.0.[1..2..3]").empty()); }
    SUBCASE("unclosed bracket") { CHECK(parse_error("zen.example=127.0.0.[2..4").find("bracket") != std::string::npos); }
    SUBCASE("stray closing bracket") { CHECK(parse_error("zen.example=127.0.0.2]").find("bracket") != std::string::npos); }
    SUBCASE("nested brackets") { CHECK(parse_error("zen.example=127.0.0.[[2]]").find("bracket") != std::string::npos); }
    SUBCASE("empty bracket list") { CHECK(parse_error("zen.example=127.0.0.[]").find("empty list") != std::string::npos); }
    SUBCASE("empty list item") { CHECK(parse_error("zen.example=127.0.0.[2;;4]").find("empty list item") != std::string::npos); }
    SUBCASE("bracket with suffix") { CHECK_FALSE(parse_error("zen.example=127.0.0.[2]3").empty()); }
    SUBCASE("empty pattern in ';' list") {
        CHECK(parse_error("zen.example=127.0.0.2;").find("empty pattern") != std::string::npos);
    }
    SUBCASE("bad second pattern") { CHECK(parse_error("zen.example=127.0.0.2;127.0.0").find("four octets") != std::string::npos); }
    SUBCASE("missing zone") { CHECK(parse_error("=127.0.0.2*3").find("zone is missing") != std::string::npos); }
    SUBCASE("empty label") { CHECK(parse_error("zen..example").find("label") != std::string::npos); }
    SUBCASE("leading dot") { CHECK(parse_error(".zen.example").find("label") != std::string::npos); }
    SUBCASE("bad character in zone") { CHECK(parse_error("zen/example").find("'/'") != std::string::npos); }
    SUBCASE("empty site") { CHECK(parse_error("   ").find("empty") != std::string::npos); }
}
