defmodule Synod.Observer do
  @moduledoc """
  Synod's HTTP endpoints, opt-in, on OTP's own `:inets` httpd:

    * `GET /metrics`: `Synod.Metrics.render/0`, the Prometheus text format
    * `GET /status.json`: `Synod.status/0` as JSON
    * `GET /`: one self-contained HTML page (inline CSS, JS and SVG; no
      external asset) that draws the cluster from `/status.json` and polls
      it every 2 s

  Start it in a supervision tree, or from application env:

      children = [{Synod.Observer, port: 9568, token: System.fetch_env!("SYNOD_TOKEN")}]

      # config/runtime.exs: the defaults start_link/1 takes its options over
      config :synod, Synod.Observer, port: 9568

  Options (validated by `Synod.Coord.Options`; those given override the
  application env `:synod, Synod.Observer`):

    * `:port` — TCP port, 0..65535 (default 9568; 0 picks a free one, see
      `port/1`)
    * `:ip` — the address to bind, a tuple (default `{127, 0, 0, 1}`: only
      this host can connect; bind another address on purpose)
    * `:token` — a bearer token (a binary of 16..256 bytes) or `nil`
      (default). With a token every request must carry `Authorization:
      Bearer <token>`; one that does not gets 401.
    * `:status_timeout` — the bound of `Synod.status/1` per request, ms
      (default 1000)
    * `:metrics` — start `Synod.Metrics` too if it is not running (default
      `true`)

  It only reads: every method but GET and HEAD gets 405, every other path
  404. See docs/observability.md.
  """

  use GenServer

  alias Synod.Coord.Options

  @schema [
    port: [type: {:integer, 0, 65_535}, default: 9568],
    ip: [
      type: {:custom, &__MODULE__.ip?/1, "an IPv4 or IPv6 address tuple"},
      default: {127, 0, 0, 1}
    ],
    token: [
      type: {:nil_or, {:custom, &__MODULE__.token?/1, "a binary of 16..256 bytes"}},
      default: nil
    ],
    status_timeout: [type: :pos_integer, default: 1_000],
    metrics: [type: :boolean, default: true]
  ]

  @doc false
  def ip?(ip), do: is_tuple(ip) and is_list(:inet.ntoa(ip))

  @doc false
  def token?(t), do: is_binary(t) and byte_size(t) in 16..256

  @doc "A child spec (options as the module doc says)."
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}}

  @doc "Starts the HTTP server. Raises `ArgumentError` on a bad option."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    opts = options!(opts)
    GenServer.start_link(__MODULE__, opts)
  end

  @doc "The port the observer `server` listens on (useful with `port: 0`)."
  @spec port(GenServer.server()) :: :inet.port_number()
  def port(server), do: GenServer.call(server, :port)

  @doc "Stops the observer."
  @spec stop(GenServer.server()) :: :ok
  def stop(server), do: GenServer.stop(server)

  defp options!(opts) do
    unless Keyword.keyword?(opts), do: raise(ArgumentError, "options must be a keyword list")
    env = Application.get_env(:synod, __MODULE__, [])
    Options.validate!(Keyword.merge(env, opts), @schema)
  end

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)

    with {:ok, _} <- Application.ensure_all_started(:inets),
         :ok <- metrics(opts.metrics),
         {:ok, httpd} <- :inets.start(:httpd, httpd_config(opts)) do
      # Under inets' supervisor; this process stops it when it stops.
      Process.monitor(httpd)
      {:ok, %{httpd: httpd, port: Keyword.fetch!(:httpd.info(httpd), :port)}}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  defp metrics(false), do: :ok

  defp metrics(true) do
    case Synod.Metrics.start_link([]) do
      {:ok, pid} ->
        # Not linked to us: the metrics outlive a restart of the server.
        Process.unlink(pid)
        :ok

      {:error, {:already_started, _}} ->
        :ok

      {:error, _} = error ->
        error
    end
  end

  defp httpd_config(opts) do
    root = Path.join(System.tmp_dir!(), "synod_observer")
    File.mkdir_p!(root)

    [
      port: opts.port,
      bind_address: opts.ip,
      ipfamily: if(tuple_size(opts.ip) == 4, do: :inet, else: :inet6),
      server_name: ~c"synod",
      server_root: to_charlist(root),
      document_root: to_charlist(root),
      modules: [Synod.Observer.Handler],
      max_clients: 16,
      keep_alive_timeout: 30,
      synod_token: opts.token,
      synod_status_timeout: opts.status_timeout
    ]
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, state.port, state}
  def handle_call(request, _from, state), do: {:reply, {:error, {:bad_request, request}}, state}

  @impl true
  def handle_cast(_msg, state), do: {:noreply, state}

  @impl true
  def handle_info({:DOWN, _, :process, httpd, reason}, %{httpd: httpd} = state),
    do: {:stop, {:httpd_down, reason}, state}

  def handle_info(_msg, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, %{httpd: httpd}) do
    :inets.stop(:httpd, httpd)
    :ok
  end
end
