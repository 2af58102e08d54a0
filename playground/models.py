"""Models of the playground app (the playground and the AI gateway); none yet."""
