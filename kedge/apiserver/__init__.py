"""kedge.apiserver"""
