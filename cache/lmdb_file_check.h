#pragma once
// Checks an `lmdb` cache file with plain reads, before LMDB maps it. LMDB trusts its
// file: a page it touches past the end of a truncated file is a SIGBUS, and a damaged
// page sends it through wild offsets. A cache only holds passes, so a file that fails
// this check is moved aside and replaced by an empty one (see open_lmdb_cache), never
// repaired.
#include <cstddef>
#include <string>

namespace smtpscreen {

struct LmdbFileCheck {
    enum class Verdict {
        Usable,   // absent, empty (LMDB initialises it), or every check passed
        Foreign,  // no LMDB meta page at all: some other file, not ours to move
        Corrupt,  // an LMDB file that LMDB must not map
    };
    Verdict verdict = Verdict::Usable;
    std::string problem;  // what is wrong, in words, when not Usable
    size_t records = 0;   // records in the cache when Usable
};

// Reads the two meta pages, then walks every page of both B-trees (the records and
// LMDB's free list) from the newest meta page: each page must lie inside the file, be
// reached once, carry its own number and a consistent layout; keys must be in order,
// every record must decode, every free page number must be in range and unused, and
// the page and record counts must match the meta page's. Reads each page once.
LmdbFileCheck check_lmdb_file(const std::string& path);

}  // namespace smtpscreen
