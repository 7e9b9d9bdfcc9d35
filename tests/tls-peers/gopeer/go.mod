module fastrpc.test/tls-peers/gopeer

go 1.22
