"""Command-line flags the web UI accepts on behalf of TI Trainer (read by the host before launch)."""


def preload(parser) -> None:
    """Add TI Trainer's flags to the web UI's argument parser."""
    parser.add_argument(
        "--ti-trainer-log-dir",
        type=str,
        default=None,
        help="TI Trainer: folder for training runs (snapshots, previews, loss logs); "
        "default: the web UI's textual_inversion log folder",
    )
    parser.add_argument(
        "--ti-trainer-no-api",
        action="store_true",
        help="TI Trainer: do not mount the /ti-trainer/v1 REST API even when --api is given",
    )
