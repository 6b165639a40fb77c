"""Build the watermark font shipped in ``src/seedream_server/assets/fonts/``.

The package draws its visible "AI生成" mark with a small subset of Noto Sans CJK SC Bold
(SIL Open Font License 1.1; the licence text sits next to the font as ``OFL.txt``).
Shipping the full collection (~20 MB per weight) is pointless for a handful of glyphs, so this
script cuts a subset holding printable ASCII, the built-in watermark texts, common full-width
punctuation and ~150 characters that are useful in custom watermark texts.

How the shipped file was made (Debian 12, ``fonts-noto-cjk`` 1:20220127+repack1-1)::

    apt-get download fonts-noto-cjk && dpkg-deb -x fonts-noto-cjk_*.deb /tmp/noto
    pip install fonttools
    python scripts/build_font.py \
        /tmp/noto/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc

(or, with the package installed, run it with no argument). fontTools is a build-time tool only;
the server never imports it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTCollection

DEFAULT_SOURCE = "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"
#: Face within the collection: "Noto Sans CJK SC Bold" (simplified-Chinese glyph forms).
FACE_NAME = "Noto Sans CJK SC Bold"
OUTPUT = Path(__file__).resolve().parent.parent / "src/seedream_server/assets/fonts/NotoSansCJKsc-Bold-subset.otf"

ASCII = "".join(chr(c) for c in range(0x20, 0x7F))
#: Texts the server itself draws, or that operators are likely to configure.
BUILTIN_TEXTS = "AI生成 预览 引擎 非真实模型 图像 生成式人工智能"
#: Full-width and CJK punctuation.
PUNCTUATION = "，。：、（）！？；“”‘’《》「」【】·—…～"
#: Common characters for custom watermark texts ("本图由AI生成，仅供参考" and the like).
COMMON = (
    "本图片由内容仅供参考示例测试版权所有禁止商用水印合成深度伪造虚拟模拟演示样张草稿请勿传播转载"
    "标识数字技术服务平台中国制作者创来源网站公司团队项目未经授权许可日期时间编号视频音频文字"
    "照相机器学习算法大小新旧用户上传下载处理编辑修改原始已完成失败成功错误警告提示信息注意说明"
    "第一二三四五六七八九十百千万年月日时分秒号"
)


def charset() -> str:
    """All characters the subset must cover, deduplicated, in a stable order."""
    seen: dict[str, None] = {}
    for ch in ASCII + BUILTIN_TEXTS + PUNCTUATION + COMMON:
        if ch.isprintable():
            seen.setdefault(ch, None)
    return "".join(seen)


def build(source: str, output: Path) -> int:
    """Subset ``FACE_NAME`` from the collection at ``source`` into ``output``; return its size."""
    collection = TTCollection(source, lazy=False)
    faces = [f for f in collection.fonts if f["name"].getDebugName(4) == FACE_NAME]
    if not faces:
        raise SystemExit(f"{FACE_NAME!r} not found in {source}")
    font = faces[0]
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.notdef_outline = True
    options.desubroutinize = True
    options.drop_tables += ["DSIG"]
    subsetter = subset.Subsetter(options=options)
    subsetter.populate(text=charset())
    subsetter.subset(font)
    output.parent.mkdir(parents=True, exist_ok=True)
    font.recalcTimestamp = False  # reproducible output
    font.save(str(output))
    return output.stat().st_size


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", default=DEFAULT_SOURCE, help="NotoSansCJK-Bold.ttc")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    size = build(args.source, args.output)
    print(f"wrote {args.output} ({size} bytes, {len(charset())} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
