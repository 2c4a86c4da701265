"""The TI Trainer tab (gradio), shared by the web UI and the standalone server, and its helpers."""
