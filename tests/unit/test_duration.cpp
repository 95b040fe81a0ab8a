#include <doctest/doctest.h>

#include "core/duration.h"

using namespace smtpscreen;
using namespace std::chrono_literals;

TEST_CASE("parse_duration reads every unit") {
    CHECK(parse_duration("300s") == Millis(300000));
    CHECK(parse_duration("5m") == Millis(5min));
    CHECK(parse_duration("1h") == Millis(1h));
    CHECK(parse_duration("1d") == Millis(24h));
    CHECK(parse_duration("1w") == Millis(7 * 24h));
    CHECK(parse_duration("250ms") == Millis(250));
    CHECK(parse_duration("0") == Millis(0));
    CHECK(parse_duration("0s") == Millis(0));
}

TEST_CASE("parse_duration: a bare number is seconds, as in postscreen") {
    CHECK(parse_duration("6") == Millis(6000));
}

TEST_CASE("parse_duration refuses anything else") {
    for (const char* bad : {"", "6x", "s", "-1s", "+1s", "1.5s", "6 s", " 6s", "6s ", "6S", "1h30m", "ms", "6mss",
                            "99999999999999999999s", "9223372036854775807d"}) {
        std::string shown = bad;
        CAPTURE(shown);
        CHECK_FALSE(parse_duration(bad));
    }
}

TEST_CASE("format_duration picks the largest exact unit") {
    CHECK(format_duration(Millis(6000)) == "6s");
    CHECK(format_duration(Millis(86400000)) == "1d");
    CHECK(format_duration(Millis(1500)) == "1500ms");
    CHECK(format_duration(Millis(0)) == "0s");
    CHECK(format_duration(Millis(90000)) == "90s");
    CHECK(format_duration(Millis(60000)) == "1m");
    CHECK(format_duration(Millis(3600000)) == "1h");
    CHECK(format_duration(Millis(30LL * 86400000)) == "30d");
    CHECK(format_duration(Millis(7 * 86400000)) == "7d");
}

TEST_CASE("format_duration output parses back to the same value") {
    for (long long ms : {0LL, 1LL, 999LL, 1000LL, 61000LL, 3600000LL, 5400000LL, 86400000LL, 90061001LL}) {
        CAPTURE(ms);
        CHECK(parse_duration(format_duration(Millis(ms))) == Millis(ms));
    }
}
