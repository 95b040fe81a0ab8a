// Fuzz target: cache/redis_record.h. The input is a client's hash as HGETALL returns it,
// written by smtpscreen or by any other tool (smtpscreen.ini(5), REDIS RECORDS): lines,
// taken as field, value, field, value... A hash with fields reads as a record and an
// empty one as none; a pass is never negative; and the record written back with the
// store's HSET (in milliseconds) reads back as the same record, whose PEXPIREAT is its
// latest pass.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/redis_record.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;
using fuzz::escaped;

namespace {

using Fields = std::vector<std::pair<std::string_view, std::string_view>>;

Fields fields_of(std::string_view in) {
    std::vector<std::string_view> lines;
    for (size_t start = 0; start <= in.size();) {
        const size_t nl = in.find('\n', start);
        const size_t end = nl == std::string_view::npos ? in.size() : nl;
        lines.push_back(in.substr(start, end - start));
        start = end + 1;
    }
    Fields out;
    for (size_t i = 0; i + 1 < lines.size(); i += 2) out.emplace_back(lines[i], lines[i + 1]);
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    const Fields fields = fields_of(in);
    const auto record = decode_redis_record(fields);
    FUZZ_CHECK(record.has_value() == !fields.empty(), "a hash with fields is a record: " + escaped(in));
    if (!record) return 0;
    int64_t latest = 0;
    for (int64_t until : record->pass_until) {
        FUZZ_CHECK(until >= 0, "a negative pass: " + escaped(in));
        latest = std::max(latest, until);
    }

    const auto commands = redis_store_commands("smtpscreen:192.0.2.1", *record);
    if (latest == 0) {
        FUZZ_CHECK((commands == std::vector<RedisCommand>{{"DEL", "smtpscreen:192.0.2.1"}}),
                   "a record without a pass is a lone DEL: " + escaped(in));
        return 0;
    }
    FUZZ_CHECK(commands.size() == 5 && commands[2].size() >= 4 && commands[2].size() % 2 == 0,
               "MULTI, DEL, HSET key field value..., PEXPIREAT, EXEC: " + escaped(in));
    Fields written;
    for (size_t i = 2; i + 1 < commands[2].size(); i += 2) written.emplace_back(commands[2][i], commands[2][i + 1]);
    const auto again = decode_redis_record(written);
    FUZZ_CHECK(again && again->pass_until == record->pass_until, "the written hash reads back: " + escaped(in));
    FUZZ_CHECK(commands[3][2] == std::to_string(latest * 1000), "PEXPIREAT at the latest pass: " + escaped(in));
    return 0;
}
