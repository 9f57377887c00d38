defmodule Synod.Hub.Stray do
  @moduledoc false
  # The hub's name for Synod.Stray (shared with the store and Raft processes).

  defdelegate bad_request(request), to: Synod.Stray
  defdelegate call(request, from, state, who, accepted?, fun), to: Synod.Stray
  defdelegate cast(request, state, who), to: Synod.Stray
  defdelegate from?(from), to: Synod.Stray
  defdelegate ignored(who, kind, term), to: Synod.Stray
  defdelegate warn(text), to: Synod.Stray
end
