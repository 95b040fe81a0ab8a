#pragma once
// Whether a DNSBL zone still answers, judged from how its lookups end (docs/design.md,
// step 5: a zone that keeps timing out is logged and skipped for a while, then tried
// again). Plain
// data and arithmetic on uv_now() milliseconds, no I/O, so the rule has its own tests.
//
// A timeout is evidence that the zone is down only if nothing came back from the zone
// after that query was sent. A burst of new clients makes a DNSBL server's receive
// buffer overflow and drop some queries, but the queries it had already taken in are
// answered after the dropped ones were sent: those timeouts say "busy", not "down", and
// must not switch the zone off (which would let listed clients in for the whole skip).
// So a zone is skipped only after kTimeoutsBeforeSkipping timeouts in a row of queries
// sent after its last answer; each of them waited a whole dnsbl.timeout with no answer
// at all from the zone. Any answer (listed, not listed, SERVFAIL, ...) resets the run.
#include <cstdint>

namespace smtpscreen {

class ZoneHealth {
public:
    static constexpr int kTimeoutsBeforeSkipping = 5;
    static constexpr uint64_t kSkipMillis = 60'000;

    // The zone's server said something (any rcode, garbage, a refusal): it is up. True
    // when this ends a skip the zone had been put in (worth a log line).
    bool answered(uint64_t now);
    // A query sent at `sent` had no answer by its deadline (`now`). True when the zone
    // is to be skipped from now until now + kSkipMillis (worth a log line).
    bool timed_out(uint64_t sent, uint64_t now);
    bool skipped(uint64_t now) const { return now < skip_until_; }
    // Timeouts in a row of queries sent after the last answer.
    int silent_timeouts() const { return silent_timeouts_; }

private:
    int silent_timeouts_ = 0;
    bool ever_answered_ = false;
    uint64_t last_answer_ = 0;  // uv_now() milliseconds
    uint64_t skip_until_ = 0;   // 0: not skipped since the last answer
};

}  // namespace smtpscreen
