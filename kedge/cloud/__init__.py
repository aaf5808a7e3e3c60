"""kedge.cloud"""
