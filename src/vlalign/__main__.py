from vlalign.cli import main

if __name__ == "__main__":  # spawned worker processes import this module too (vlalign demo --jobs)
    raise SystemExit(main())
