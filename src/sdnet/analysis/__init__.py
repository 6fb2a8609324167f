"""Analyses of the factorisation (paper §5.2-5.6): what s and z hold, and what can be done with them.

Each analysis is a library function on a trained model and prepared images; ``sdnet analyse ...`` wraps them.
"""
