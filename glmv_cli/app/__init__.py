"""The application layer between the CLI and the model: attachments (files, stdin, URLs) and their
loaders, the session that loads a checkpoint once and answers questions as a stream of typed
events, grounding boxes, and the chat loop's commands. No terminal output here (see render.py)."""
