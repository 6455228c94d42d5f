"""The command line: argv, environment, terminal, exit codes and output formats.

This is the only package that reads the environment, the terminal or the working directory.
"""
