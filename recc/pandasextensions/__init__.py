"""pandas helpers for RECC: `read_df` / `write_df` over the named datastores, and partitioned data.

Usually imported as ``import recc.pandasextensions.io as pdx``.
"""

from recc.pandasextensions.io import (Partition, list_partitions, read_df, read_partition, read_partitions,
                                      write_df)

__all__ = ["Partition", "list_partitions", "read_df", "read_partition", "read_partitions", "write_df"]
