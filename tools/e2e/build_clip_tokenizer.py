"""Build the standard 49408-token CLIP tokenizers offline from the BPE list in the open-clip-torch wheel."""

# The vocabulary is derived exactly as OpenAI CLIP's SimpleTokenizer does: 256 byte characters,
# the same with '</w>', the first 48894 merges, then the two special tokens. The result is saved
# in the layout that sd-scripts' --tokenizer_cache_dir reads, so no hub access is needed:
#   OUT/openai_clip-vit-large-patch14/                 SD1.x and SDXL tokenizer 1 (pad <|endoftext|>)
#   OUT/laion_CLIP-ViT-bigG-14-laion2B-39B-b160k/      SDXL tokenizer 2 (pad "!", id 0)

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import zipfile
from pathlib import Path

from transformers import CLIPTokenizer

BPE_IN_WHEEL = "open_clip/bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
TOKENIZER_DIRS = {
    "openai_clip-vit-large-patch14": "<|endoftext|>",
    "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k": "!",
}


def bytes_to_unicode() -> list[str]:
    """CLIP's reversible byte -> printable character table, in vocabulary order."""
    ranges = (range(ord("!"), ord("~") + 1), range(ord("¡"), ord("¬") + 1), range(ord("®"), ord("ÿ") + 1))
    printable = [b for r in ranges for b in r]
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def read_bpe(source: Path) -> str:
    """The merge list text, from the open-clip-torch wheel or from the .txt.gz itself."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            return gzip.decompress(wheel.read(BPE_IN_WHEEL)).decode("utf-8")
    return gzip.decompress(source.read_bytes()).decode("utf-8")


def build(source: Path, out: Path) -> None:
    """Write both tokenizers under `out`."""
    # Line 0 is a version header; CLIP uses exactly this many merges.
    merges = [tuple(line.split()) for line in read_bpe(source).split("\n")[1 : VOCAB_SIZE - 256 * 2 - 2 + 1]]
    byte_chars = bytes_to_unicode()
    vocab = [*byte_chars, *(c + "</w>" for c in byte_chars), *("".join(m) for m in merges)]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != VOCAB_SIZE:
        raise SystemExit(f"{source}: derived {len(vocab)} tokens, expected {VOCAB_SIZE}")
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab_file.write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False), "utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", "utf-8")
        for name, pad in TOKENIZER_DIRS.items():
            tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77, pad_token=pad)
            tokenizer.save_pretrained(str(out / name))


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("source", type=Path, help="open_clip_torch-*.whl or bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("out", type=Path, help="tokenizer cache folder to create")
    args = ap.parse_args()
    build(args.source, args.out)
    print(f"wrote {', '.join(TOKENIZER_DIRS)} under {args.out}")


if __name__ == "__main__":
    main()
