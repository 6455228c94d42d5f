"""The only package that imports cryptographic primitives (``cryptography``, ``pyrage``).

Each module is small and named after what it does: ``aead`` seals records, ``kdf`` derives keys,
``signing`` holds Ed25519 keys and signatures, ``sshsig`` is OpenSSH's signature format,
``age`` is the age file format for encrypting to a NodeId. Modules are imported lazily by their
users so that the CLI's hot path pays only for what it touches.
"""
