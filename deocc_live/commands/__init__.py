"""The commands of `deocc-live`: the filter itself (run), bench and gui; deocc_live.cli picks one."""
