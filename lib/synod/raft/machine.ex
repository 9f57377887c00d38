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
end
