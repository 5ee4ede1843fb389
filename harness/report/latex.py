"""Plain text as LaTeX, for the tables and their claims: escapes, the paper's symbols in math."""
from __future__ import annotations

import re

from harness.report.marks import BELOW_CONTROL_MARK, NOT_LEARNED_MARK, STALE_MARK
from harness.report.verdict import NOT_REPRODUCED_MARK


def tex_text(text: str) -> str:
    """Plain text to LaTeX: symbols in math, the paper's M, K and P as math, escapes."""
    text = text.replace("\\", r"\textbackslash{}").replace("%", r"\%").replace("&", r"\&").replace("_", r"\_")
    text = text.replace("#", r"\#").replace("`", "").replace("--", "-{}-")  # --config, not an en dash
    text = text.replace("~", r"\textasciitilde{}").replace("−", "$-$").replace("–", "--").replace("·", r"$\cdot$")
    text = re.sub(r"\b([MKP])=(\d+)", r"$\1{=}\2$", text)
    text = re.sub(r"(?<![\w$])([MKP])(?![\w${])", r"$\1$", text)  # the paper's M, K, P standing alone
    text = re.sub(r"(\d+)->(\d+)(?:->(\d+))?", lambda m: "$" + r"{\to}".join(g for g in m.groups() if g) + "$", text)
    for plain, math in (("±", r"$\pm$"), ("—", "---"), ("…", r"\dots{}"), ("×", r"$\times$"), ("≥", r"$\geq$"),
                        (NOT_LEARNED_MARK, r"$^\dagger$"), (BELOW_CONTROL_MARK, r"$^\ddagger$"), ("->", r"$\to$"),
                        (NOT_REPRODUCED_MARK, r"$^{\times}$"), (STALE_MARK, r"\textsuperscript{\S}"),
                        ("≯", r"$\not>$"), (" > ", " $>$ ")):  # a claim, "A > B"; text-mode > is ¿
        text = text.replace(plain, math)
    return text
