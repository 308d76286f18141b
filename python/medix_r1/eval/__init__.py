"""The paper's three-stage reference-based evaluation: generate answers, judge them (three rounds in one
conversation), score per task. Everything reads local copies of the benchmarks and local models."""
