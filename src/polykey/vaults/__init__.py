"""Vaults: git repositories of secrets whose objects and refs are sealed records of the node file.

``paths`` validates secret paths; ``objects`` keeps git objects in the node file; ``tree`` edits
trees; ``vault`` is one vault (read, write, history); ``registry`` names, creates and removes
vaults and their tags.
"""
