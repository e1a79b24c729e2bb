"""Code generators. Each backend is a table {op name: emitter}; a missing entry is a
clear 'unsupported' error, never a silent fallback."""
