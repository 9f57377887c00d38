defmodule Synod.Raft.Machine do
  @moduledoc """
  The behaviour of a replicated state machine run by a Raft group.

  Every member of a group runs the same machine and applies the same
  committed commands in the same order, so every member computes the same
  state. Callbacks must therefore be deterministic: no clocks, no random
  numbers, no messages, no reads of anything outside `state` and the
  command. Whatever needs time (a lease that expires, a timeout) is decided
  by the leader and proposed as a command.

    * `init/1` builds the state of a fresh group from the `machine:` option's
      argument.
    * `apply/3` applies one committed command and returns the new state and
      the result; the member that proposed the command returns that result
      to the caller of `Synod.Raft.command/3`.
    * `snapshot/1` returns a term that `restore/2` turns back into the
      state; the driver takes one every `snapshot_every` applied entries,
      writes it to disk and compacts the log.
    * Optionally, a machine whose state is large streams it instead:
      `snapshot_open/1` freezes the state (the member goes on applying while
      the snapshot is written), `snapshot_next/1` returns its bytes piece by
      piece until `:eof` (called from another process), `snapshot_close/1`
      lets go; `restore_open/2`, `restore_feed/2` and `restore_finish/2`
      rebuild the state from those bytes fed in pieces. A streamed snapshot
      is never whole in memory. A machine exports all six or none.

  Queries (`Synod.Raft.query/3`) are plain functions of the state, or
  `{module, function, args}` called with the state first, run on the
  member after a read-index round (linearizable) or at once (`:stale`).
  """

  @typedoc "Where a command sits in the log."
  @type meta :: %{index: pos_integer(), term: pos_integer()}

  @callback init(arg :: term()) :: state :: term()
  @callback apply(meta(), command :: term(), state :: term()) ::
              {new_state :: term(), result :: term()}
  @callback snapshot(state :: term()) :: term()
  @callback restore(snapshot :: term(), arg :: term()) :: state :: term()

  @callback snapshot_open(state :: term()) :: writer :: term()
  @callback snapshot_next(writer :: term()) :: binary() | :eof
  @callback snapshot_close(writer :: term()) :: :ok
  @callback restore_open(size :: non_neg_integer(), arg :: term()) :: restorer :: term()
  @callback restore_feed(restorer :: term(), piece :: binary()) :: restorer :: term()
  @callback restore_finish(restorer :: term(), arg :: term()) :: state :: term()
  @optional_callbacks snapshot_open: 1,
                      snapshot_next: 1,
                      snapshot_close: 1,
                      restore_open: 2,
                      restore_feed: 2,
                      restore_finish: 2
end
