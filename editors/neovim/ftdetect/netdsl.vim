" netdsl network specifications: *.net
autocmd BufRead,BufNewFile *.net setfiletype netdsl
