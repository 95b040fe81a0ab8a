// Fuzz target: screen/command_reader.h. The input is the byte stream a client sends.
// It is fed to CommandReader whole, one byte at a time, and in pieces whose sizes and
// drain points come from the input itself; every way must give the lines that a
// deliberately naive splitter finds (the reader's result may not depend on how TCP cut
// the stream), within the bounds the reader promises. Each line then goes through
// parse_command and mail_address.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "screen/command_reader.h"
#include "tests/fuzz/fuzz_support.h"

using namespace smtpscreen;
using fuzz::escaped;

namespace {

struct Limits {
    size_t max_line;
    size_t max_pending;
};
// The two production limits (RFC 5321 command and text lines) and small ones, so that
// short inputs reach truncation and overflow.
constexpr Limits kLimits[] = {{512, 64}, {1000, 64}, {7, 3}, {3, 1}};

struct Line {
    std::string text;
    bool bare_lf;
    bool too_long;
};

// RFC 5321 §2.3.8 the slow, obvious way: a line ends at LF; a CR right before the LF
// belongs to the ending, any other CR is text; text beyond `limit` is cut and marked.
struct Model {
    std::vector<Line> lines;
    bool partial = false;  // bytes after the last LF
};

Model naive_split(std::string_view in, size_t limit) {
    Model m;
    size_t start = 0;
    for (size_t i = 0; i < in.size(); ++i) {
        if (in[i] != '\n') continue;
        std::string_view raw = in.substr(start, i - start);
        const bool crlf = !raw.empty() && raw.back() == '\r';
        if (crlf) raw.remove_suffix(1);
        m.lines.push_back({std::string(raw.substr(0, limit)), !crlf, raw.size() > limit});
        start = i + 1;
    }
    m.partial = start < in.size();
    return m;
}

std::string describe(const Line& l) {
    return escaped(l.text) + (l.bare_lf ? " bare_lf" : "") + (l.too_long ? " too_long" : "");
}

bool same(const Line& a, const CommandLine& b) {
    return a.text == b.text && a.bare_lf == b.bare_lf && a.too_long == b.too_long;
}

char upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

void check_command(const std::string& text) {
    const SmtpCommand cmd = parse_command(text);
    // The verb is the line up to the first space or colon, upper-cased; the arguments
    // are what follows one space, or the colon and what follows it.
    const size_t end = text.find_first_of(" :");
    const std::string_view raw_verb = std::string_view(text).substr(0, end);
    FUZZ_CHECK(cmd.verb.size() == raw_verb.size(), "verb " + escaped(cmd.verb) + " of " + escaped(text));
    for (size_t i = 0; i < raw_verb.size(); ++i) {
        FUZZ_CHECK(cmd.verb[i] == upper(raw_verb[i]), "verb " + escaped(cmd.verb) + " of " + escaped(text));
    }
    if (end == std::string::npos) {
        FUZZ_CHECK(cmd.args.empty(), "args " + escaped(cmd.args) + " of " + escaped(text));
    } else {
        const size_t skip = text[end] == ' ' ? 1 : 0;
        FUZZ_CHECK(cmd.args == std::string_view(text).substr(end + skip),
                   "args " + escaped(cmd.args) + " of " + escaped(text));
    }

    for (std::string_view keyword : {"FROM", "TO", "TO:", "FROM:"}) {
        const auto addr = mail_address(cmd.args, keyword);
        if (!addr) continue;
        // Whatever is returned was written between angle brackets in the arguments.
        FUZZ_CHECK(cmd.args.find("<" + *addr + ">") != std::string::npos,
                   "address " + escaped(*addr) + " not found in " + escaped(cmd.args));
        FUZZ_CHECK(addr->size() + 3 <= cmd.args.size(), "address longer than its arguments " + escaped(cmd.args));
    }
}

// Drains everything the reader holds into `out`, checking the promised bounds on the way.
void drain(CommandReader& reader, const Limits& lim, std::vector<CommandLine>& out) {
    FUZZ_CHECK(reader.pending_lines() <= lim.max_pending,
               "pending " + std::to_string(reader.pending_lines()) + " > " + std::to_string(lim.max_pending));
    while (auto line = reader.next()) out.push_back(std::move(*line));
    FUZZ_CHECK(reader.pending_lines() == 0, "next() returned nothing while lines were pending");
}

void check_bounds(const std::vector<CommandLine>& lines, const Limits& lim) {
    // RFC 5321 §4.5.3.1.4: max_line counts the CRLF, so the text holds two fewer.
    const size_t limit = lim.max_line > 2 ? lim.max_line - 2 : 1;
    for (const auto& l : lines) {
        FUZZ_CHECK(l.text.size() <= limit, "line of " + std::to_string(l.text.size()) + " octets with max_line " +
                                               std::to_string(lim.max_line));
        FUZZ_CHECK(l.text.find('\n') == std::string::npos, "LF inside a line: " + escaped(l.text));
    }
}

void run(std::string_view in, const Limits& lim) {
    const size_t limit = lim.max_line > 2 ? lim.max_line - 2 : 1;
    const Model model = naive_split(in, limit);
    // Built only when a check fails: it is most of the cost otherwise.
    const auto where = [&] {
        return " (max_line " + std::to_string(lim.max_line) + ", max_pending " + std::to_string(lim.max_pending) +
               ", input " + escaped(in) + ")";
    };

    // 1. Byte by byte, drained after every byte: nothing can overflow, and every line
    //    must be exactly the naive one.
    {
        CommandReader reader(lim.max_line, lim.max_pending);
        std::vector<CommandLine> got;
        for (size_t i = 0; i < in.size(); ++i) {
            reader.feed(in.substr(i, 1));
            drain(reader, lim, got);
        }
        check_bounds(got, lim);
        FUZZ_CHECK(!reader.overflowed(), "overflowed while drained after every byte" + where());
        FUZZ_CHECK(got.size() == model.lines.size(), "byte by byte: " + std::to_string(got.size()) +
                                                         " lines, expected " + std::to_string(model.lines.size()) +
                                                         where());
        for (size_t i = 0; i < got.size(); ++i) {
            FUZZ_CHECK(same(model.lines[i], got[i]), "byte by byte, line " + std::to_string(i) + ": got " +
                                                         describe({got[i].text, got[i].bare_lf, got[i].too_long}) +
                                                         ", expected " + describe(model.lines[i]) + where());
        }
        FUZZ_CHECK(reader.has_partial() == model.partial, "has_partial() wrong after byte-by-byte feed" + where());
        for (const auto& l : got) check_command(l.text);
    }

    // 2. All at once, drained at the end: the first max_pending lines, then overflow.
    {
        CommandReader reader(lim.max_line, lim.max_pending);
        reader.feed(in);
        std::vector<CommandLine> got;
        drain(reader, lim, got);
        check_bounds(got, lim);
        const size_t kept = std::min(model.lines.size(), lim.max_pending);
        FUZZ_CHECK(got.size() == kept,
                   "whole: " + std::to_string(got.size()) + " lines, expected " + std::to_string(kept) + where());
        for (size_t i = 0; i < got.size(); ++i) {
            FUZZ_CHECK(same(model.lines[i], got[i]), "whole, line " + std::to_string(i) + where());
        }
        FUZZ_CHECK(reader.overflowed() == (model.lines.size() > lim.max_pending),
                   "whole: overflowed() wrong" + where());
        FUZZ_CHECK(reader.has_partial() == model.partial, "whole: has_partial() wrong" + where());
    }

    // 3. Pieces cut where the input says, drained at points the input says: lines are
    //    only ever dropped whole, so what comes out is the naive list with some lines
    //    missing, in order, and overflowed() says whether any went missing.
    {
        fuzz::InputRandom rnd(in);
        CommandReader reader(lim.max_line, lim.max_pending);
        std::vector<CommandLine> got;
        size_t pos = 0;
        while (pos < in.size()) {
            // Mostly short pieces (TCP segments of a slow client), sometimes long ones.
            const size_t cap = rnd.below(4) == 0 ? in.size() - pos : std::min<size_t>(in.size() - pos, 16);
            const size_t n = 1 + rnd.below(cap);
            reader.feed(in.substr(pos, n));
            pos += n;
            FUZZ_CHECK(reader.pending_lines() <= lim.max_pending, "pending lines over the bound" + where());
            if (rnd.below(3) == 0) drain(reader, lim, got);
            if (rnd.below(8) == 0) reader.feed({});
        }
        drain(reader, lim, got);
        check_bounds(got, lim);
        size_t m = 0;
        for (size_t i = 0; i < got.size(); ++i) {
            while (m < model.lines.size() && !same(model.lines[m], got[i])) ++m;
            FUZZ_CHECK(m < model.lines.size(), "pieces: line " + std::to_string(i) + " " +
                                                   describe({got[i].text, got[i].bare_lf, got[i].too_long}) +
                                                   " is not one of the naive lines, in order" + where());
            ++m;
        }
        FUZZ_CHECK(reader.overflowed() == (got.size() < model.lines.size()),
                   "pieces: overflowed() is " + std::string(reader.overflowed() ? "true" : "false") + " with " +
                       std::to_string(got.size()) + " of " + std::to_string(model.lines.size()) + " lines" + where());
        FUZZ_CHECK(reader.has_partial() == model.partial, "pieces: has_partial() wrong" + where());
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    for (const auto& lim : kLimits) run(in, lim);
    return 0;
}
