"""Sub-commands of ``cloudpypi``; ``common`` holds what they share."""
