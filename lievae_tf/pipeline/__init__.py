"""The pipeline a researcher runs, as the real commands in subprocesses: a study's sweep
(`sweep`, `studies`), scoring one model (`scoring`), the quickstart (`quickstart`) and the
summary across seeds (`collect`). A package of its own so that a wheel ships it (setuptools'
package discovery skips a directory without this file)."""
