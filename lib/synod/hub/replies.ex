defmodule Synod.Hub.Replies do
  @moduledoc false
  # Pure: which way a request's answer goes to each respondent (docs/hub.md,
  # "Results and timeouts"). Respondents on a peer get their answer through
  # that peer's coordinator, after it applied the registry change (so a
  # caller that has its answer sees the child in its own node's registry);
  # respondents on other nodes through the request's relay (`relay: node`
  # in its options: a client node's member) when that is a peer; the rest,
  # those on this node included, directly. No I/O.

  @doc """
  Splits `reply_to` (pids) of a request answered on `me`, whose peers are
  the keys of `peers`: `{direct, via}`, `direct` the pids answered at once,
  `via` `%{peer => [pid]}`.
  """
  @spec route([pid()], node(), map(), node() | nil) :: {[pid()], %{node() => [pid()]}}
  def route(reply_to, me, peers, relay) do
    via =
      Enum.group_by(reply_to, fn pid ->
        cond do
          node(pid) == me -> nil
          Map.has_key?(peers, node(pid)) -> node(pid)
          relay != me and is_map_key(peers, relay) -> relay
          true -> nil
        end
      end)

    Map.pop(via, nil, [])
  end
end
