defmodule Synod.Test.Etcd do
  @moduledoc false
  # A 3-member etcd cluster on loopback and a small client for its v3 JSON
  # gateway (HTTP/1.1 keep-alive over :gen_tcp, one connection per client
  # process), for bench/etcd_bench.exs. The client is as thin as we can
  # make it, so what is measured is etcd and its gateway: a request is one
  # POST with a JSON body built by hand (keys and values in base64, as the
  # gateway wants), the answer is read with the socket in :http_bin mode and
  # the few fields a loop needs are taken out with a regex.

  alias Synod.Test.Stats

  @doc """
  Starts 3 etcd members on 127.0.0.1 (client ports base+1..3, peer ports
  base+11..13) with data under `dir`, installing Debian's `etcd-server`
  first when `etcd` is missing. Returns `{os_pids, client_ports}` once every
  member answers.
  """
  def start_cluster(dir, base) do
    etcd = System.find_executable("etcd") || install()
    peers = for i <- 1..3, do: "e#{i}=http://127.0.0.1:#{base + 10 + i}"

    pids =
      for i <- 1..3 do
        File.mkdir_p!(Path.join(dir, "e#{i}"))

        args = [
          "--name e#{i}",
          "--data-dir #{Path.join(dir, "e#{i}")}",
          "--listen-client-urls http://127.0.0.1:#{base + i}",
          "--advertise-client-urls http://127.0.0.1:#{base + i}",
          "--listen-peer-urls http://127.0.0.1:#{base + 10 + i}",
          "--initial-advertise-peer-urls http://127.0.0.1:#{base + 10 + i}",
          "--initial-cluster #{Enum.join(peers, ",")}",
          "--initial-cluster-state new",
          "--initial-cluster-token synod-bench-#{base}"
        ]

        log = Path.join(dir, "e#{i}.log")

        port =
          Port.open({:spawn, "sh -c 'exec #{etcd} #{Enum.join(args, " ")} > #{log} 2>&1'"}, [])

        {:os_pid, pid} = Port.info(port, :os_pid)
        pid
      end

    ports = for i <- 1..3, do: base + i

    try do
      for p <- ports, do: wait_ready(p, 200)
    rescue
      e ->
        stop_cluster(pids)
        reraise e, __STACKTRACE__
    end

    {pids, ports}
  end

  @doc "Stops what `start_cluster/2` started."
  def stop_cluster(pids) do
    for pid <- pids, do: System.cmd("kill", ["-9", "#{pid}"], stderr_to_stdout: true)
    :ok
  end

  defp install do
    IO.puts("etcd not found: installing Debian's etcd-server (apt-get)")

    {_, 0} =
      System.cmd("apt-get", ["install", "-y", "--no-install-recommends", "etcd-server"],
        env: [{"DEBIAN_FRONTEND", "noninteractive"}],
        stderr_to_stdout: true
      )

    System.find_executable("etcd") || raise "etcd-server installed but no etcd on PATH"
  end

  defp wait_ready(port, 0), do: raise("etcd on port #{port} did not start")

  defp wait_ready(port, tries) do
    with {:ok, c} <- connect(port),
         {:ok, _} <- put(c, "ready", "1") do
      close(c)
    else
      _ ->
        Process.sleep(100)
        wait_ready(port, tries - 1)
    end
  end

  # -- the client ------------------------------------------------------------------

  def connect(port) do
    with {:ok, s} <-
           :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false, nodelay: true]) do
      {:ok, %{sock: s, port: port}}
    end
  end

  def close(%{sock: s}), do: :gen_tcp.close(s)

  @doc "POSTs `json` to `path`; `{:ok, body}` for a 200, else `{:error, {status, body}}`."
  def request(%{sock: s, port: port}, path, json) do
    req = [
      "POST ",
      path,
      " HTTP/1.1\r\nHost: 127.0.0.1:#{port}\r\nContent-Type: application/json\r\nContent-Length: ",
      Integer.to_string(IO.iodata_length(json)),
      "\r\n\r\n",
      json
    ]

    with :ok <- :gen_tcp.send(s, req), do: read_response(s)
  end

  defp read_response(s) do
    :ok = :inet.setopts(s, packet: :http_bin)

    with {:ok, {:http_response, _, status, _}} <- :gen_tcp.recv(s, 0, 30_000),
         {:ok, length} <- headers(s, 0) do
      :ok = :inet.setopts(s, packet: :raw)
      {:ok, body} = if length > 0, do: :gen_tcp.recv(s, length, 30_000), else: {:ok, ""}
      if status == 200, do: {:ok, body}, else: {:error, {status, body}}
    end
  end

  defp headers(s, length) do
    case :gen_tcp.recv(s, 0, 30_000) do
      {:ok, {:http_header, _, :"Content-Length", _, v}} -> headers(s, String.to_integer(v))
      {:ok, {:http_header, _, _, _, _}} -> headers(s, length)
      {:ok, :http_eoh} -> {:ok, length}
      other -> {:error, other}
    end
  end

  defp b64(bin), do: Base.encode64(bin)

  def put(c, key, value, lease \\ nil) do
    lease = if lease, do: ~s(,"lease":"#{lease}"), else: ""
    request(c, "/v3/kv/put", ~s({"key":"#{b64(key)}","value":"#{b64(value)}"#{lease}}))
  end

  def get(c, key, serializable \\ false) do
    request(c, "/v3/kv/range", ~s({"key":"#{b64(key)}","serializable":#{serializable}}))
  end

  @doc "Compare-and-swap on mod_revision: `{:ok, swapped?, revision}`."
  def cas(c, key, mod, value) do
    body =
      ~s({"compare":[{"key":"#{b64(key)}","target":"MOD","result":"EQUAL","mod_revision":"#{mod}"}],) <>
        ~s("success":[{"request_put":{"key":"#{b64(key)}","value":"#{b64(value)}"}}]})

    with {:ok, resp} <- request(c, "/v3/kv/txn", body),
         do: {:ok, resp =~ ~s("succeeded":true), revision(resp)}
  end

  def grant(c, ttl_s) do
    with {:ok, resp} <- request(c, "/v3/lease/grant", ~s({"TTL":"#{ttl_s}"})),
         [_, id] <- Regex.run(~r/"ID":"(\d+)"/, resp),
         do: {:ok, id}
  end

  @doc "Takes the lock `name` under `lease` and lets it go again."
  def lock_unlock(c, name, lease) do
    {:ok, resp} = request(c, "/v3/lock/lock", ~s({"name":"#{b64(name)}","lease":"#{lease}"}))
    [_, key] = Regex.run(~r/"key":"([^"]+)"/, resp)
    {:ok, _} = request(c, "/v3/lock/unlock", ~s({"key":"#{key}"}))
    :ok
  end

  defp revision(resp) do
    [_, rev] = Regex.run(~r/"revision":"(\d+)"/, resp)
    String.to_integer(rev)
  end

  # -- measuring loops ------------------------------------------------------------------

  defp with_conn(port, fun) do
    {:ok, c} = connect(port)

    try do
      fun.(c)
    after
      close(c)
    end
  end

  @doc "Microseconds of `n` sequential puts."
  def puts(port, n),
    do:
      with_conn(port, fn c ->
        Stats.timed(n, fn i -> {:ok, _} = put(c, "bench/put", "#{i}") end)
      end)

  @doc "Microseconds of `n` sequential gets (linearizable, or serializable: the gateway's floor)."
  def gets(port, n, serializable) do
    with_conn(port, fn c ->
      Stats.timed(n, fn _ -> {:ok, _} = get(c, "bench/put", serializable) end)
    end)
  end

  @doc "Microseconds of `n` sequential lock + unlock cycles under one lease."
  def locks(port, name, n) do
    with_conn(port, fn c ->
      {:ok, lease} = grant(c, 10)
      Stats.timed(n, fn _ -> :ok = lock_unlock(c, name, lease) end)
    end)
  end

  # Operations per second of `clients` clients, each on its own connection
  # (spread over `ports`) doing `per` ops: `op.(conn, client, 0, nil)` first,
  # then `op.(conn, client, i, previous result)` for i in 1..per.
  defp rate(ports, clients, per, op) do
    Stats.rate(clients, per, fn k ->
      with_conn(Enum.at(ports, rem(k, length(ports))), fn c ->
        Enum.reduce(1..per, op.(c, k, 0, nil), fn i, st -> op.(c, k, i, st) end)
      end)
    end)
  end

  @doc "Puts/s with `clients` clients."
  def put_rate(ports, clients, per) do
    rate(ports, clients, per, fn
      _c, _k, 0, _ -> nil
      c, k, i, _ -> {:ok, _} = put(c, "bench/rate/#{k}", "#{i}")
    end)
  end

  @doc "Compare-and-swaps/s with `clients` clients, each on its own key."
  def cas_rate(ports, clients, per) do
    rate(ports, clients, per, fn
      c, k, 0, _ ->
        {:ok, resp} = put(c, "bench/cas/#{k}", "0")
        revision(resp)

      c, k, i, mod ->
        {:ok, true, rev} = cas(c, "bench/cas/#{k}", mod, "#{i}")
        rev
    end)
  end

  @doc """
  `clients` processes take the lock `name` in a loop for `ms`; returns each
  one's count of cycles.
  """
  def contend(ports, name, clients, ms) do
    deadline = System.monotonic_time(:millisecond) + ms

    1..clients
    |> Enum.map(fn k ->
      Task.async(fn ->
        with_conn(Enum.at(ports, rem(k, length(ports))), fn c ->
          {:ok, lease} = grant(c, 10)
          contend_loop(c, name, lease, deadline, 0)
        end)
      end)
    end)
    |> Task.await_many(600_000)
  end

  defp contend_loop(c, name, lease, deadline, n) do
    if System.monotonic_time(:millisecond) >= deadline do
      n
    else
      :ok = lock_unlock(c, name, lease)
      contend_loop(c, name, lease, deadline, n + 1)
    end
  end
end
