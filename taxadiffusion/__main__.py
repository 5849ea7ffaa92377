"""``python -m taxadiffusion <tool> [args]`` (the same as the ``taxadiffusion`` command)."""

from taxadiffusion.cli import main

if __name__ == "__main__":
    main()
