#!/usr/bin/env python3
"""Generates src/text/unicode_tables.cc: the per-code-point tables the BERT tokenizer needs.

Why probe the `tokenizers` package instead of reading `unicodedata` alone: the ground truth for
ScaleBERT's tokenizer is the `tokenizers` package, whose Rust crates carry their own (older)
Unicode tables. For example U+2E50 is punctuation in Python's Unicode 14 but not in the crate
that BertPreTokenizer uses, and unassigned code points are not removed by BertNormalizer's
clean_text. So every property is measured by running the package's own BertNormalizer,
BertPreTokenizer and NFD on each code point, one at a time. Only the canonical combining class
(ccc, used for NFD's canonical reordering) comes from `unicodedata`, and the script checks that
its emulation of strip_accents (NFD, then drop Mn) reproduces the package on every code point.

Usage: .venv/bin/python scripts/gen_unicode_tables.py [--out src/text/unicode_tables.cc]
"""
import argparse
import sys
import unicodedata

import tokenizers
from tokenizers.normalizers import NFD, BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

# Flag bits; keep in sync with src/text/unicode_tables.h.
REMOVE = 1 << 0      # clean_text drops it (U+0000, U+FFFD, control/format/private use)
SPACE = 1 << 1       # clean_text maps it to ' ' (whitespace)
CHINESE = 1 << 2     # handle_chinese_chars surrounds it with spaces
PUNCT = 1 << 3       # BertPreTokenizer isolates it
WHITE = 1 << 4       # BertPreTokenizer splits on it (char::is_whitespace)
MN = 1 << 5          # strip_accents drops it after NFD (nonspacing mark)
DECOMP = 1 << 6      # NFD changes it (table kDecompositions or Hangul algorithm)
LOWER = 1 << 7       # lowercase changes it (table kLowercase)
CCC = 1 << 8         # nonzero canonical combining class (table kCombiningClasses)

HANGUL_BASE, HANGUL_COUNT = 0xAC00, 11172
BLOCK = 256


def hangul_nfd(code):
    s_index = code - HANGUL_BASE
    lead = 0x1100 + s_index // 588
    vowel = 0x1161 + (s_index % 588) // 28
    trail = 0x11A7 + s_index % 28
    return [lead, vowel] + ([trail] if trail != 0x11A7 else [])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="src/text/unicode_tables.cc")
    args = parser.parse_args()

    clean = BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    chinese = BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    strip = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    lower = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True)
    nfd = NFD()
    pre = BertPreTokenizer()

    flags = [0] * 0x110000
    decompositions = {}
    lowercase = {}
    combining = {}
    stripped = {}
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue  # surrogates cannot occur in valid UTF-8
        ch = chr(code)
        f = 0
        out = clean.normalize_str(ch)
        if out == "":
            f |= REMOVE
        elif out == " ":
            f |= SPACE
        else:
            assert out == ch, hex(code)
        out = chinese.normalize_str(ch)
        if out == " " + ch + " ":
            f |= CHINESE
        else:
            assert out == ch, hex(code)
        parts = [p for p, _ in pre.pre_tokenize_str("a" + ch + "b")]
        if parts == ["a", ch, "b"]:
            f |= PUNCT
        elif parts == ["a", "b"]:
            f |= WHITE
        else:
            assert parts == ["a" + ch + "b"], (hex(code), parts)
        decomposed = nfd.normalize_str(ch)
        if decomposed != ch:
            f |= DECOMP
            if not (HANGUL_BASE <= code < HANGUL_BASE + HANGUL_COUNT):
                decompositions[code] = [ord(c) for c in decomposed]
            else:
                assert [ord(c) for c in decomposed] == hangul_nfd(code), hex(code)
        stripped[code] = strip.normalize_str(ch)
        if decomposed == ch and stripped[code] == "":
            f |= MN
        out = lower.normalize_str(ch)
        if out != ch:
            f |= LOWER
            lowercase[code] = [ord(c) for c in out]
        if unicodedata.combining(ch):
            f |= CCC
            combining[code] = unicodedata.combining(ch)
        flags[code] = f

    # strip_accents emulation check: NFD(c) without Mn must equal the package's output.
    for code, expected in stripped.items():
        parts = hangul_nfd(code) if flags[code] & DECOMP and code not in decompositions and \
            HANGUL_BASE <= code < HANGUL_BASE + HANGUL_COUNT else decompositions.get(code, [code])
        for part in parts:
            assert part == code or not (flags[part] & DECOMP), ("decomposition not full", hex(code))
        got = "".join(chr(p) for p in parts if not flags[p] & MN)
        assert got == expected, (hex(code), got, expected)
    # Characters that survive strip_accents with a nonzero ccc are the only ones reordering can move.
    reorderable = [c for c in combining if not flags[c] & MN]

    # Two-stage table: kBlockIndex[code >> 8] names a deduplicated block of 256 flag words.
    blocks = []
    block_ids = {}
    index = []
    for start in range(0, 0x110000, BLOCK):
        key = tuple(flags[start:start + BLOCK])
        if key not in block_ids:
            block_ids[key] = len(blocks)
            blocks.append(key)
        index.append(block_ids[key])

    def pool_table(name, mapping):
        pool = []
        rows = []
        for code in sorted(mapping):
            rows.append(f"{{0x{code:X}, {len(pool)}, {len(mapping[code])}}}")
            pool.extend(mapping[code])
        text = f"const CodePointMapping k{name}[] = {{\n"
        text += wrap(rows)
        text += f"}};\nconst size_t k{name}Count = {len(rows)};\n"
        text += f"const char32_t k{name}Pool[] = {{\n" + wrap([f"0x{c:X}" for c in pool]) + "};\n"
        return text

    def wrap(items, width=100):
        lines, line = [], "   "
        for item in items:
            if len(line) + len(item) + 2 > width:
                lines.append(line)
                line = "   "
            line += " " + item + ","
        lines.append(line)
        return "\n".join(lines) + "\n"

    with open(args.out, "w", encoding="utf-8") as out:
        out.write(
            "// GENERATED FILE, do not edit. Per-code-point tables for the BERT tokenizer.\n"
            f"// Made by: .venv/bin/python scripts/gen_unicode_tables.py --out src/text/unicode_tables.cc\n"
            f"// Source: probing tokenizers {tokenizers.__version__} (BertNormalizer, BertPreTokenizer, NFD)\n"
            f"// on every code point; canonical combining classes from Python {sys.version.split()[0]}\n"
            f"// unicodedata {unicodedata.unidata_version}. {len(blocks)} distinct blocks of {BLOCK};\n"
            f"// {len(reorderable)} code points keep a nonzero ccc after strip_accents.\n"
            '#include "text/unicode_tables.h"\n\n'
            "namespace scalebert::text::unicode {\n\n")
        out.write(f"const uint16_t kBlockIndex[{len(index)}] = {{\n" + wrap([str(i) for i in index]) + "};\n")
        out.write(f"const uint16_t kBlocks[{len(blocks)}][{BLOCK}] = {{\n")
        for block in blocks:
            out.write("  {\n" + wrap([str(v) for v in block]) + "  },\n")
        out.write("};\n\n")
        out.write(pool_table("Decomposition", decompositions) + "\n")
        out.write(pool_table("Lowercase", lowercase) + "\n")
        rows = [f"{{0x{c:X}, {combining[c]}}}" for c in sorted(combining)]
        out.write("const CombiningClass kCombiningClasses[] = {\n" + wrap(rows) + "};\n")
        out.write(f"const size_t kCombiningClassesCount = {len(rows)};\n\n")
        out.write("}  // namespace scalebert::text::unicode\n")
    print(f"wrote {args.out}: {len(blocks)} blocks, {len(decompositions)} decompositions, "
          f"{len(lowercase)} lowercase mappings, {len(combining)} combining classes, "
          f"{len(reorderable)} reorderable after strip")


if __name__ == "__main__":
    main()
