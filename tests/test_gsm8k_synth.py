"""The generated word problems are arithmetically right, in GSM8K's format, seeded, and split cleanly."""

from __future__ import annotations

import ast
import re

import pytest

from study.data import gsm8k_synth

LMEVAL_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")  # lm-eval gsm8k's strict-match filter
ANNOTATION = re.compile(r"<<([^=<>]+)=([^<>]+)>>")
WORD_NUMBERS = {"a friend": 1}  # numbers a question may state in words instead of digits


def safe_eval(expr: str) -> int:
    """Integer + - * / only; a division must be exact (GSM8K's calculator would show a fraction)."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp):
            a, b = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Div):
                assert b != 0 and a % b == 0, f"inexact division in {expr}"
                return a // b
        raise AssertionError(f"unexpected syntax in {expr!r}")

    return walk(ast.parse(expr, mode="eval"))


def check_problem(problem: dict) -> list[int]:
    """Re-derive every step; return the computed values. Fails on any inconsistency."""
    question, answer = problem["question"], problem["answer"]
    given = {int(x) for x in re.findall(r"\d+", question)}
    given |= {v for word, v in WORD_NUMBERS.items() if word in question}
    if "self and" in question:  # "between himself and 3 friends" = 4 people
        given |= {v + 1 for v in given}
    values: list[int] = []
    for match in ANNOTATION.finditer(answer):
        expr, stated = match.group(1), match.group(2)
        value = safe_eval(expr)
        assert value == int(stated), f"{expr} = {value}, annotated {stated}"
        assert value >= 0
        assert answer[match.end():].startswith(stated), "the value must follow its annotation"
        for operand in map(int, re.findall(r"\d+", expr)):
            assert operand in given or operand in values, f"{operand} in {expr} comes from nowhere:\n{question}"
        values.append(value)
    assert values, answer
    final = LMEVAL_STRICT.findall(answer)
    assert final == [str(values[-1])], f"final {final} vs last step {values[-1]}"
    assert answer.rstrip().endswith(f"#### {values[-1]}")
    return values


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5, "tiny", "easy", "medium", "hard", "mixed"])
def test_answers_are_correct_and_have_the_requested_number_of_steps(difficulty):
    lo, hi = gsm8k_synth.step_range(difficulty)
    for problem in gsm8k_synth.generate(300, seed=3, difficulty=difficulty):
        values = check_problem(problem)
        assert lo <= len(values) <= hi, problem


def test_easy_problems_are_one_small_addition_or_subtraction():
    for problem in gsm8k_synth.generate(200, seed=0, difficulty="easy"):
        (expr,) = [m.group(1) for m in ANNOTATION.finditer(problem["answer"])]
        assert re.fullmatch(r"\d+[+-]\d+", expr), expr
        assert all(int(x) <= 40 for x in re.findall(r"\d+", expr)), expr


def test_tiny_problems_are_one_step_on_one_digit_numbers():
    """The demo's fine-tuning task: one addition or subtraction whose operands are single digits."""
    problems = gsm8k_synth.generate(300, seed=0, difficulty="tiny")
    for problem in problems:
        (expr,) = [m.group(1) for m in ANNOTATION.finditer(problem["answer"])]
        assert re.fullmatch(r"[1-9][+-][1-9]", expr), expr
    assert {"+", "-"} <= {ch for p in problems for ch in ANNOTATION.search(p["answer"]).group(1) if ch in "+-"}


def test_same_seed_same_problems_other_seed_others():
    a = gsm8k_synth.generate(50, seed=7, difficulty="medium")
    assert a == gsm8k_synth.generate(50, seed=7, difficulty="medium")
    b = gsm8k_synth.generate(50, seed=8, difficulty="medium")
    assert len({p["question"] for p in a} & {p["question"] for p in b}) < 5


def test_questions_are_distinct_varied_english():
    problems = gsm8k_synth.generate(500, seed=1, difficulty="mixed")
    questions = [p["question"] for p in problems]
    assert len(set(questions)) == len(questions)
    # the asking sentence with names and numbers blanked: many different shapes, not one template
    shapes = {re.sub(r"\b[A-Z][a-z]+\b|\d+", "_", re.split(r"(?<=[.?])\s", q)[-1]) for q in questions}
    assert len(shapes) >= 15, shapes
    assert all(q.endswith("?") and q[0].isupper() for q in questions)
    assert all("  " not in q and " ." not in q for q in questions)


def test_train_and_test_splits_never_share_a_question():
    train = gsm8k_synth.generate(400, seed=0, difficulty="easy", split="train")
    test = gsm8k_synth.generate(100, seed=0, difficulty="easy", split="test")
    assert not {p["question"] for p in train} & {p["question"] for p in test}
    assert all(gsm8k_synth.split_of(p["question"]) == "test" for p in test)


@pytest.mark.parametrize("bad", [0, 6, "extreme", 2.5, True])
def test_bad_difficulty_is_refused(bad):
    with pytest.raises(ValueError, match="difficulty"):
        gsm8k_synth.generate(3, seed=0, difficulty=bad)


def test_checker_catches_a_wrong_answer():
    problem = gsm8k_synth.generate(1, seed=0, difficulty=2)[0]
    wrong = dict(problem, answer=re.sub(r"#### (\d+)", lambda m: f"#### {int(m.group(1)) + 1}", problem["answer"]))
    with pytest.raises(AssertionError):
        check_problem(wrong)
