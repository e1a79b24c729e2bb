"""Editor support: the Pygments lexer (the TextMate grammar and editor set-ups live in editors/)."""
