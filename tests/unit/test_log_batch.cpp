// core/log_batch.h: a loop turn's lines wait for flush(), a warning does not, and a
// batch never outgrows one atomic pipe write.
#include <doctest/doctest.h>

#include <climits>
#include <string>

#include "core/log_batch.h"
#include "fixtures.h"

using namespace smtpscreen;
using smtpscreen::test::StderrCapture;

TEST_CASE("info lines wait for the flush and come out whole, in order") {
    StderrCapture err;
    Logger log(false, "smtpscreen-test", true);
    LogBatch batch(log);
    batch.info("CONNECT from [{}]:{} to [127.0.0.1]:25", "192.0.2.1", 4711);
    batch.info("PASS OLD [{}]:{}", "192.0.2.1", 4711);
    CHECK(err.text().empty());
    batch.flush();
    const std::string pid = std::to_string(::getpid());
    CHECK(err.text() == "smtpscreen-test[" + pid + "]: CONNECT from [192.0.2.1]:4711 to [127.0.0.1]:25\n" +
                            "smtpscreen-test[" + pid + "]: PASS OLD [192.0.2.1]:4711\n");
    CHECK(batch.pending_bytes() == 0);
}

TEST_CASE("a warning is written at once, after the lines before it") {
    StderrCapture err;
    Logger log(false, "t", true);
    LogBatch batch(log);
    batch.info("first");
    batch.warn("dnsbl zone {} timed out", "bl.test");
    const std::string pid = std::to_string(::getpid());
    CHECK(err.text() == "t[" + pid + "]: first\nt[" + pid + "]: warning: dnsbl zone bl.test timed out\n");
    batch.error("last");
    CHECK(err.count("error: last") == 1);
}

TEST_CASE("a batch never holds more than PIPE_BUF bytes, and a longer line goes alone") {
    StderrCapture err;
    Logger log(false, "t", true);
    LogBatch batch(log);
    const std::string line(100, 'x');
    for (int i = 0; i < 200; ++i) {
        batch.info("{}", line);
        CHECK(batch.pending_bytes() <= PIPE_BUF);
    }
    const int written_lines = err.count(line);
    CHECK(written_lines > 0);    // full batches went out without a flush
    CHECK(written_lines < 200);  // and the last lines still wait
    batch.flush();
    CHECK(err.count(line) == 200);

    batch.info("{}", std::string(PIPE_BUF + 10, 'y'));
    CHECK(batch.pending_bytes() == 0);
    CHECK(err.count(std::string(PIPE_BUF + 10, 'y')) == 1);
}

TEST_CASE("with stderr off nothing waits, and the destructor flushes what does") {
    StderrCapture err;
    {
        Logger quiet(false, "t", false);
        LogBatch batch(quiet);
        batch.info("never on stderr");
        CHECK(batch.pending_bytes() == 0);
    }
    {
        Logger log(false, "t", true);
        LogBatch batch(log);
        batch.info("kept until the end");
    }
    CHECK(err.count("never on stderr") == 0);
    CHECK(err.count("kept until the end") == 1);
}
