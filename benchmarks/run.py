"""Run the benchmarks: python benchmarks/run.py [--quick] (the same as drift-cpp bench)."""

from drift_cpp.cli import main

if __name__ == "__main__":
    main(["bench", *__import__("sys").argv[1:]])
