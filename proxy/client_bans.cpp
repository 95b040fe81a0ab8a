#include "proxy/client_bans.h"

#include <chrono>

#include "proxy/worker.h"

namespace smtpscreen {

int64_t ban_clock_ms() {
    return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void count_failure_toward_ban(Worker& worker, const Endpoint& client, const BanRules& rules) {
    // The callbacks hold no session: a Redis answer may come after the session that
    // failed has gone (the worker outlives its stores, which answer nothing once
    // destroyed).
    worker.failures().fail(client, rules, uv_now(worker.loop()), [&worker, client, rules](std::optional<uint32_t> n) {
        if (!n) return;
        // The last ban, if remembered, makes this one twice as long.
        std::string ip = client.ip();
        worker.bans().lookup_ban(ip, [&worker, client, rules, ip, n = *n](std::optional<Ban> previous) {
            const int64_t now = ban_clock_ms();
            // Sessions of the client that were already under way when it was banned can
            // fail too: the ban in force stands, and is logged once.
            if (previous && previous->in_force(now)) return;
            const Ban ban = next_ban(previous, rules, now, n);
            worker.bans().store_ban(ip, ban);
            worker.events().banned(client, ban);
        });
    });
}

}  // namespace smtpscreen
